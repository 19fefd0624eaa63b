"""BERT (``transformers`` ``BertModel``) in graphc's API: the encoder with a padding mask.

Word + learned position + token-type embeddings and a LayerNorm, then N post-norm layers
of bidirectional multi-head self-attention (masked where ``attention_mask`` is 0) and a
GELU feed-forward. Written in the natural batched form: ids and attention_mask [B, S] ->
q, k, v [B, H, S, D]; the mask becomes the additive [B, 1, 1, S] that transformers
builds, ``(1 - mask) * finfo.min``, added to the scores [B, H, S, S] (the O2 attention
rewrite fuses scores, mask, softmax and PV into one attention kernel).

    from graphc.models import bert
    model = bert.from_hf(hf_model)                  # a transformers BertModel
    exe = model.compile("numba")                    # one trace over ("B", "S")
    hidden = exe(ids, attention_mask)               # int64 [B, S] each -> [B, S, hidden]
    hidden, pooled = model.compile("numba", pooled=True)(ids, attention_mask)

Parameters keep the Hugging Face names without the ``bert.`` prefix; linear weights are
[out, in] as in torch and become constants of their transposed views (``x @ W^T``).
Token types are all 0 unless ``trace(token_types=True)`` adds a ``token_type_ids`` input.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

import graphc
from graphc.errors import AttrError

from .gpt2 import _check, _numpy, random_params

_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
         "relu": "relu", "silu": "silu", "swish": "silu"}


@dataclass(frozen=True)
class BertConfig:
    """BERT's hyper-parameters, with the Hugging Face ``BertConfig`` names."""
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dtype: str = "float32"

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise AttrError(f"BertConfig: hidden_size {self.hidden_size} is not a multiple of "
                            f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in _ACTS:
            raise AttrError(f"BertConfig: hidden_act {self.hidden_act!r} is not supported "
                            f"({', '.join(_ACTS)})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, config, dtype: str = "float32") -> "BertConfig":
        """From a ``transformers.BertConfig`` (or its ``to_dict()``). Only absolute
        position embeddings are implemented (transformers 4.x's relative ones are refused)."""
        d = config if isinstance(config, dict) else config.to_dict()
        pe = d.get("position_embedding_type", "absolute")
        if pe not in (None, "absolute"):
            raise AttrError(f"BertConfig: position_embedding_type {pe!r} is not supported "
                            "(only 'absolute')")
        names = set(cls.__dataclass_fields__) - {"dtype"}
        return cls(**{k: d[k] for k in names if k in d}, dtype=dtype)


def param_shapes(c: BertConfig, pooler: bool = False) -> dict[str, tuple]:
    """Every parameter's name (the Hugging Face one, without ``bert.``) and shape;
    with ``pooler``, the pooler's too."""
    d, f = c.hidden_size, c.intermediate_size
    want = {"embeddings.word_embeddings.weight": (c.vocab_size, d),
            "embeddings.position_embeddings.weight": (c.max_position_embeddings, d),
            "embeddings.token_type_embeddings.weight": (c.type_vocab_size, d),
            "embeddings.LayerNorm.weight": (d,), "embeddings.LayerNorm.bias": (d,)}
    for l in range(c.num_hidden_layers):
        p = f"encoder.layer.{l}."
        for name in ("query", "key", "value"):
            want[p + f"attention.self.{name}.weight"] = (d, d)
            want[p + f"attention.self.{name}.bias"] = (d,)
        want.update({p + "attention.output.dense.weight": (d, d),
                     p + "attention.output.dense.bias": (d,),
                     p + "attention.output.LayerNorm.weight": (d,),
                     p + "attention.output.LayerNorm.bias": (d,),
                     p + "intermediate.dense.weight": (f, d), p + "intermediate.dense.bias": (f,),
                     p + "output.dense.weight": (d, f), p + "output.dense.bias": (d,),
                     p + "output.LayerNorm.weight": (d,), p + "output.LayerNorm.bias": (d,)})
    if pooler:
        want.update({"pooler.dense.weight": (d, d), "pooler.dense.bias": (d,)})
    return want


def random(config: BertConfig | None = None, seed: int = 0, pooler: bool = True) -> "Bert":
    """A BERT encoder with seeded random parameters (no transformers needed; by default
    a tiny 2-layer one)."""
    c = config or BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=128, vocab_size=97, max_position_embeddings=64)
    return Bert(c, random_params(param_shapes(c, pooler), c.dtype, seed))


def from_state_dict(config, state_dict, dtype: str = "float32") -> "Bert":
    """A BERT encoder from a config (:class:`BertConfig`, a ``transformers.BertConfig`` or
    its dict) and the state_dict of a ``BertModel`` (or of a ``Bert*`` head model: the
    ``bert.`` prefix is dropped and the head's own tensors ignored). The pooler is
    optional. Raises :class:`graphc.CheckpointError` naming missing, unexpected or
    misshapen tensors."""
    if not isinstance(config, BertConfig):
        config = BertConfig.from_hf(config, dtype)
    c = config
    want = param_shapes(c)
    has_bert_prefix = any(k.startswith("bert.") for k in state_dict)
    sd = {}
    for k, v in state_dict.items():
        if has_bert_prefix:
            if not k.startswith("bert."):
                continue                    # a task head (cls., classifier., qa_outputs.)
            k = k[len("bert."):]
        if k == "embeddings.position_ids" or k == "embeddings.token_type_ids":
            continue                        # buffers, not parameters
        sd[k] = _numpy(v)
    if "pooler.dense.weight" in sd:
        want = param_shapes(c, pooler=True)
    params = _check(sd, want, "BERT")
    return Bert(c, {k: v.astype(c.dtype) for k, v in params.items()})


def from_hf(hf_model, dtype: str = "float32") -> "Bert":
    """A BERT encoder holding the weights of a ``transformers`` ``BertModel`` (or a
    ``Bert*`` model with a head: its encoder), in ``dtype``."""
    return from_state_dict(hf_model.config, hf_model.state_dict(), dtype)


# ---------------------------------------------------------------------------------------
# The forward pass (traced)

def linear(x, P, name: str):
    """x @ W^T + b with the [out, in] weight W of ``name`` (a transposed-view constant)."""
    return x @ P[name + ".weight^T"] + P[name + ".bias"]


def extended_mask(attention_mask, dtype: str):
    """attention_mask int [B, T] (1: a token, 0: padding) -> the additive mask
    [B, 1, 1, T] that transformers adds to the scores: 0 for tokens, finfo(dtype).min for
    padding (finite, so a padded key weighs exp(min - max) = 0 without inf - inf)."""
    B, T = attention_mask.shape
    m = attention_mask.astype(dtype).reshape(B, 1, 1, T)
    return (1.0 - m) * float(np.finfo(dtype).min)


def self_attention(x, mask, P, pre: str, c: BertConfig):
    """x: [B, S, d], mask: additive [B, 1, 1, S] -> the attention output [B, S, d]
    (before the output dense)."""
    B, S, _ = x.shape
    H, D = c.num_attention_heads, c.head_dim

    def heads(t):                                   # [B, S, d] -> [B, H, S, D]
        return t.reshape(B, S, H, D).transpose(0, 2, 1, 3)

    q = heads(linear(x, P, pre + "query"))
    k = heads(linear(x, P, pre + "key"))
    v = heads(linear(x, P, pre + "value"))
    scores = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(D) + mask                 # [B,H,S,S]
    o = graphc.softmax(scores, axis=-1) @ v
    return o.transpose(0, 2, 1, 3).reshape(B, S, H * D)


def _act(x, name: str):
    act = _ACTS[name]
    if act in ("gelu", "gelu_tanh"):
        return graphc.gelu(x, approximate="tanh" if act == "gelu_tanh" else "none")
    return getattr(graphc, act)(x)


def layer(x, mask, P, l: int, c: BertConfig):
    """Post-norm layer: x = LN(x + dense(attn(x))); x = LN(x + FFN(x))."""
    p = f"encoder.layer.{l}."
    eps = c.layer_norm_eps
    a = linear(self_attention(x, mask, P, p + "attention.self.", c), P,
               p + "attention.output.dense")
    x = graphc.layernorm(x + a, P[p + "attention.output.LayerNorm.weight"],
                         P[p + "attention.output.LayerNorm.bias"], eps=eps)
    h = _act(linear(x, P, p + "intermediate.dense"), c.hidden_act)
    return graphc.layernorm(x + linear(h, P, p + "output.dense"),
                            P[p + "output.LayerNorm.weight"], P[p + "output.LayerNorm.bias"],
                            eps=eps)


class Bert:
    """A BERT encoder with its parameters; compiled once per backend for any (B, S)."""

    def __init__(self, config: BertConfig, params: dict[str, np.ndarray]):
        self.config = config
        self.params = params
        self._compiled: dict = {}

    @property
    def has_pooler(self) -> bool:
        return "pooler.dense.weight" in self.params

    def _constants(self) -> dict:
        P = {}
        for k, v in self.params.items():
            if v.ndim == 2 and k.endswith(".weight") and not k.startswith("embeddings."):
                P[k + "^T"] = graphc.constant(v.T, name=k + "^T")
            else:
                P[k] = graphc.constant(v, name=k)
        return P

    def forward(self, ids, attention_mask, token_type_ids=None, pooled: bool = False):
        """Traced body: ids, attention_mask (and token_type_ids) int [B, S] -> the last
        hidden states [B, S, hidden] (and, with ``pooled``, the pooler output
        tanh(dense(h[:, 0])) [B, hidden])."""
        c = self.config
        P = self._constants()
        S = ids.shape[1]
        e = "embeddings."
        x = graphc.embedding(P[e + "word_embeddings.weight"], ids) \
            + P[e + "position_embeddings.weight"][:S]
        if token_type_ids is None:
            x = x + P[e + "token_type_embeddings.weight"][0]
        else:
            x = x + graphc.embedding(P[e + "token_type_embeddings.weight"], token_type_ids)
        x = graphc.layernorm(x, P[e + "LayerNorm.weight"], P[e + "LayerNorm.bias"],
                             eps=c.layer_norm_eps)
        mask = extended_mask(attention_mask, c.dtype)
        for l in range(c.num_hidden_layers):
            x = layer(x, mask, P, l, c)
        if not pooled:
            return x
        return x, graphc.tanh(linear(x[:, 0], P, "pooler.dense"))

    def trace(self, batch="B", seq_len="S", token_types: bool = False,
              pooled: bool = False) -> graphc.Graph:
        """The graph for ids and attention_mask [batch, seq_len] (symbols or ints), plus
        token_type_ids with ``token_types``; ``pooled`` adds the pooler output."""
        if pooled and not self.has_pooler:
            raise graphc.InputError("this BERT has no pooler weights (pooler.dense)")
        specs = [graphc.spec((batch, seq_len), "int64", name="ids"),
                 graphc.spec((batch, seq_len), "int64", name="attention_mask")]
        if token_types:
            specs.append(graphc.spec((batch, seq_len), "int64", name="token_type_ids"))
        return graphc.trace(lambda *a: self.forward(*a, pooled=pooled), *specs, name="bert")

    def compile(self, backend: str = "reference", token_types: bool = False,
                pooled: bool = False, **options):
        """The executable (ids, attention_mask[, token_type_ids] -> hidden states
        [, pooled]) for ``backend``, compiled once from one trace over symbolic B and S."""
        key = (backend, token_types, pooled, tuple(sorted(options.items())))
        if key not in self._compiled:
            self._compiled[key] = graphc.compile(self.trace(token_types=token_types,
                                                            pooled=pooled),
                                                 backend=backend, **options)
        return self._compiled[key]

    def __call__(self, ids, attention_mask=None, token_type_ids=None,
                 backend: str = "reference", **options):
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.shape[1] > self.config.max_position_embeddings:
            raise graphc.InputError(f"{ids.shape[1]} tokens exceed max_position_embeddings "
                                    f"{self.config.max_position_embeddings}")
        mask = np.ones_like(ids) if attention_mask is None else \
            np.asarray(attention_mask, np.int64).reshape(ids.shape)
        args = [ids, mask]
        if token_type_ids is not None:
            args.append(np.asarray(token_type_ids, np.int64).reshape(ids.shape))
        return self.compile(backend, token_types=token_type_ids is not None, **options)(*args)

    def num_params(self) -> int:
        return int(sum(a.size for a in self.params.values()))

    def __repr__(self) -> str:
        return f"Bert({asdict(self.config)})"
