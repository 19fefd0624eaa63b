"""Llama (``transformers`` ``LlamaModel`` / ``LlamaForCausalLM``) in graphc's API.

Token embedding, N pre-norm decoder layers of causal grouped-query attention (k/v with
``num_key_value_heads`` heads, each read by a group of query heads; RoPE in the
rotate-half layout) and a SwiGLU MLP, RMSNorm throughout, then the final norm and the
lm_head (tied to the embedding when the config says so). Written in the natural batched
form, as ``transformers`` writes it: ids [B, S] -> q [B, H, S, D], k and v [B, KV, S, D],
``graphc.rope(..., layout="half")``, ``repeat_kv`` (``graphc.repeat`` along the head
axis), scores [B, H, S, S] + the causal mask -> head merge [B, S, H*D] (the O2 attention
rewrite reads the kv heads without copies and fuses it all into one attention kernel).

    from graphc.models import llama
    model = llama.from_hf(hf_model)                # a transformers LlamaForCausalLM
    exe = model.compile("numba")                   # one trace over ("B", "S")
    logits = exe(ids)                              # ids int64 [B, S] -> [B, S, vocab]

Parameters keep the Hugging Face names; linear weights are [out, in] as in torch and
become constants of their transposed views (``x @ W^T``, no copy). RoPE scaling: none
('default'), 'linear' and 'llama3' (frequencies computed as transformers does).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

import graphc
from graphc.errors import AttrError

from .bert import extended_mask
from .gpt2 import _check, _numpy, random_params

_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class LlamaConfig:
    """Llama's hyper-parameters, with the Hugging Face ``LlamaConfig`` names.
    ``rope_parameters`` holds ``rope_type`` ('default', 'linear' or 'llama3') and its
    parameters (``rope_theta`` is kept beside it)."""
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None     # None: num_attention_heads (no GQA)
    head_dim: int | None = None                # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_parameters: dict = field(default_factory=lambda: {"rope_type": "default"})
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        def bad(msg):
            raise AttrError(f"LlamaConfig: {msg}")
        if self.hidden_act != "silu":
            bad(f"hidden_act {self.hidden_act!r} is not supported (only 'silu')")
        if self.num_attention_heads % self.kv_heads:
            bad(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.kv_heads}")
        if self.dim % 2:
            bad(f"head_dim {self.dim} must be even (RoPE pairs)")
        kind = self.rope_parameters.get("rope_type", self.rope_parameters.get("type",
                                                                              "default"))
        if kind not in _ROPE_TYPES:
            bad(f"rope_type {kind!r} is not supported ({', '.join(_ROPE_TYPES)})")

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, config, dtype: str = "float32") -> "LlamaConfig":
        """From a ``transformers.LlamaConfig`` (or its ``to_dict()``): ``rope_parameters``
        (transformers 5.x) or ``rope_theta`` + ``rope_scaling`` (4.x). Unknown keys are
        ignored."""
        d = config if isinstance(config, dict) else config.to_dict()
        names = set(cls.__dataclass_fields__) - {"dtype", "rope_parameters", "rope_theta"}
        kw = {k: d[k] for k in names if k in d and d[k] is not None}
        rp = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        theta = rp.pop("rope_theta", d.get("rope_theta"))
        if "type" in rp and "rope_type" not in rp:
            rp["rope_type"] = rp.pop("type")
        rp.setdefault("rope_type", "default")
        return cls(**kw, rope_theta=float(theta if theta is not None else 10000.0),
                   rope_parameters=rp, dtype=dtype)


def rope_inv_freq(c: LlamaConfig) -> np.ndarray:
    """The RoPE inverse frequencies [head_dim / 2] (float64), with the config's scaling
    (transformers' ``_compute_default_rope_parameters`` / ``linear`` / ``llama3``)."""
    D = c.dim
    inv = 1.0 / c.rope_theta ** (np.arange(0, D, 2, dtype=np.float64) / D)
    rp = c.rope_parameters
    kind = rp.get("rope_type", "default")
    if kind == "linear":
        inv = inv / float(rp["factor"])
    elif kind == "llama3":
        factor, lo, hi = float(rp["factor"]), float(rp["low_freq_factor"]), \
            float(rp["high_freq_factor"])
        old = float(rp["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
        inv = np.where(medium, smoothed, scaled)
    return inv


def param_shapes(c: LlamaConfig, lm_head: bool = True) -> dict[str, tuple]:
    """Every parameter's name (the Hugging Face one) and shape; ``lm_head``: with the
    output head (not stored when tied to the embedding)."""
    d, f, H, KV, D = (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.kv_heads,
                      c.dim)
    want = {"model.embed_tokens.weight": (c.vocab_size, d), "model.norm.weight": (d,)}
    if lm_head and not c.tie_word_embeddings:
        want["lm_head.weight"] = (c.vocab_size, d)
    for l in range(c.num_hidden_layers):
        p = f"model.layers.{l}."
        a = p + "self_attn."
        for name, n_out in (("q_proj", H * D), ("k_proj", KV * D), ("v_proj", KV * D)):
            want[a + name + ".weight"] = (n_out, d)
            if c.attention_bias:
                want[a + name + ".bias"] = (n_out,)
        want[a + "o_proj.weight"] = (d, H * D)
        if c.attention_bias:
            want[a + "o_proj.bias"] = (d,)
        m = p + "mlp."
        for name, shape in (("gate_proj", (f, d)), ("up_proj", (f, d)),
                            ("down_proj", (d, f))):
            want[m + name + ".weight"] = shape
            if c.mlp_bias:
                want[m + name + ".bias"] = shape[:1]
        want[p + "input_layernorm.weight"] = (d,)
        want[p + "post_attention_layernorm.weight"] = (d,)
    return want


def random(config: LlamaConfig | None = None, seed: int = 0) -> "Llama":
    """A Llama with seeded random parameters (no transformers needed; by default a tiny
    2-layer one with 4 query heads and 2 kv heads)."""
    c = config or LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=96, num_hidden_layers=2, vocab_size=97,
                              max_position_embeddings=64)
    return Llama(c, random_params(param_shapes(c), c.dtype, seed))


def from_state_dict(config, state_dict, dtype: str = "float32",
                    inv_freq: np.ndarray | None = None) -> "Llama":
    """A Llama model from a config (:class:`LlamaConfig`, a ``transformers.LlamaConfig``
    or its dict) and a ``LlamaModel`` / ``LlamaForCausalLM`` state_dict (torch tensors or
    NumPy arrays; without ``lm_head.weight`` and untied, the model gives the last hidden
    states). ``inv_freq`` overrides the RoPE frequencies (e.g. transformers' own float32
    ones). Raises :class:`graphc.CheckpointError` naming missing, unexpected or misshapen
    tensors."""
    if not isinstance(config, LlamaConfig):
        config = LlamaConfig.from_hf(config, dtype)
    c = config
    sd = {}
    for k, v in state_dict.items():
        if k.endswith("rotary_emb.inv_freq"):
            continue                                # a buffer
        sd[k if k.startswith(("model.", "lm_head.")) else "model." + k] = _numpy(v)
    if c.tie_word_embeddings:
        sd.pop("lm_head.weight", None)          # the embedding itself (tied)
    want = param_shapes(c, lm_head=c.tie_word_embeddings or "lm_head.weight" in sd)
    params = _check(sd, want, "Llama")
    model = Llama(c, {k: v.astype(c.dtype) for k, v in params.items()})
    if inv_freq is not None:
        model.inv_freq = np.asarray(inv_freq).astype(c.dtype)
    return model


def from_hf(hf_model, dtype: str = "float32") -> "Llama":
    """A Llama model holding the weights of a ``transformers`` ``LlamaModel`` or
    ``LlamaForCausalLM`` (in ``dtype``), with its rotary embedding's own frequencies."""
    base = getattr(hf_model, "model", hf_model)
    rot = getattr(base, "rotary_emb", None)
    inv = _numpy(rot.inv_freq) if rot is not None and hasattr(rot, "inv_freq") else None
    if rot is not None and float(getattr(rot, "attention_scaling", 1.0)) != 1.0:
        raise AttrError(f"Llama: RoPE attention_scaling {rot.attention_scaling} is not "
                        "supported")
    return from_state_dict(hf_model.config, hf_model.state_dict(), dtype, inv_freq=inv)


# ---------------------------------------------------------------------------------------
# The forward pass (traced)

def linear(x, P, name: str):
    """x @ W^T (+ b) with the [out, in] weight W of ``name`` (a transposed-view constant)."""
    y = x @ P[name + ".weight^T"]
    b = P.get(name + ".bias")
    return y if b is None else y + b


def repeat_kv(t, n_rep: int):
    """[B, KV, S, D] -> [B, KV * n_rep, S, D]: query head h reads kv head h // n_rep
    (transformers' ``repeat_kv``; the attention rewrite reads the source without copies)."""
    if n_rep == 1:
        return t
    return graphc.repeat(t, n_rep, axis=1)


def attention(x, pos, inv_freq, P, pre: str, c: LlamaConfig, mask=None):
    """Causal grouped-query self-attention with RoPE. x: [B, S, d] -> [B, S, d];
    ``mask``: an additive padding mask [B, 1, 1, S] (optional), added after the causal one."""
    B, S, _ = x.shape
    H, KV, D = c.num_attention_heads, c.kv_heads, c.dim
    q = linear(x, P, pre + "q_proj").reshape(B, S, H, D).transpose(0, 2, 1, 3)
    k = linear(x, P, pre + "k_proj").reshape(B, S, KV, D).transpose(0, 2, 1, 3)
    v = linear(x, P, pre + "v_proj").reshape(B, S, KV, D).transpose(0, 2, 1, 3)
    q = graphc.rope(q, pos, inv_freq, layout="half")
    k = graphc.rope(k, pos, inv_freq, layout="half")
    k, v = repeat_kv(k, H // KV), repeat_kv(v, H // KV)
    scores = (q @ k.transpose(0, 1, 3, 2)) * D ** -0.5 \
        + graphc.causal_mask(S, S, dtype=c.dtype)
    if mask is not None:
        scores = scores + mask
    o = graphc.softmax(scores, axis=-1) @ v                                        # [B,H,S,D]
    return linear(o.transpose(0, 2, 1, 3).reshape(B, S, H * D), P, pre + "o_proj")


def mlp(x, P, pre: str):
    """SwiGLU: down(silu(gate(x)) * up(x))."""
    return linear(graphc.silu(linear(x, P, pre + "gate_proj")) * linear(x, P, pre + "up_proj"),
                  P, pre + "down_proj")


def decoder_layer(x, pos, inv_freq, P, l: int, c: LlamaConfig, mask=None):
    """Pre-norm layer: x += attn(RMSNorm(x)); x += mlp(RMSNorm(x))."""
    p = f"model.layers.{l}."
    eps = c.rms_norm_eps
    x = x + attention(graphc.rmsnorm(x, P[p + "input_layernorm.weight"], eps=eps),
                      pos, inv_freq, P, p + "self_attn.", c, mask)
    return x + mlp(graphc.rmsnorm(x, P[p + "post_attention_layernorm.weight"], eps=eps),
                   P, p + "mlp.")


class Llama:
    """A Llama model with its parameters; compiled once per backend for any (B, S)."""

    def __init__(self, config: LlamaConfig, params: dict[str, np.ndarray]):
        self.config = config
        self.params = params
        self.inv_freq = rope_inv_freq(config).astype(config.dtype)
        self._compiled: dict = {}

    @property
    def has_lm_head(self) -> bool:
        return self.config.tie_word_embeddings or "lm_head.weight" in self.params

    def _constants(self) -> dict:
        P = {}
        for k, v in self.params.items():
            if v.ndim == 2 and k != "model.embed_tokens.weight":
                P[k + "^T"] = graphc.constant(v.T, name=k + "^T")
            else:
                P[k] = graphc.constant(v, name=k)
        if self.config.tie_word_embeddings:
            P["lm_head.weight^T"] = graphc.constant(
                self.params["model.embed_tokens.weight"].T, name="model.embed_tokens.weight^T")
        return P

    def hidden_states(self, ids, attention_mask=None, P=None):
        """Traced body: ids int [B, S] (and an attention_mask int [B, S], 0 at padding)
        -> the last hidden states [B, S, hidden] (after the final norm, as LlamaModel's
        last_hidden_state). Positions are 0..S-1 in every row, as transformers' without
        position_ids."""
        c = self.config
        P = P or self._constants()
        S = ids.shape[1]
        pos = graphc.arange(S)                                        # positions 0..S-1
        inv_freq = graphc.constant(self.inv_freq, name="rope.inv_freq")
        mask = None if attention_mask is None else extended_mask(attention_mask, c.dtype)
        x = graphc.embedding(P["model.embed_tokens.weight"], ids)
        for l in range(c.num_hidden_layers):
            x = decoder_layer(x, pos, inv_freq, P, l, c, mask)
        return graphc.rmsnorm(x, P["model.norm.weight"], eps=c.rms_norm_eps)

    def forward(self, ids, attention_mask=None):
        """Traced body: ids int [B, S] (and an attention_mask) -> logits [B, S, vocab]."""
        P = self._constants()
        return linear(self.hidden_states(ids, attention_mask, P), P, "lm_head")

    def trace(self, batch="B", seq_len="S", output: str | None = None,
              padded: bool = False) -> graphc.Graph:
        """The graph for ids [batch, seq_len] (symbols or ints), with ``padded`` also an
        attention_mask [batch, seq_len]; ``output`` is 'logits' (the default with an
        lm_head) or 'hidden'."""
        output = output or ("logits" if self.has_lm_head else "hidden")
        if output == "logits" and not self.has_lm_head:
            raise graphc.InputError("this Llama has no lm_head (a LlamaModel state_dict)")
        body = {"logits": self.forward, "hidden": self.hidden_states}.get(output)
        if body is None:
            raise graphc.InputError(f"output must be 'logits' or 'hidden', got {output!r}")
        specs = [graphc.spec((batch, seq_len), "int64", name="ids")]
        if padded:
            specs.append(graphc.spec((batch, seq_len), "int64", name="attention_mask"))
        return graphc.trace(lambda *a: body(*a), *specs,
                            name="llama" if output == "logits" else "llama_hidden")

    def compile(self, backend: str = "reference", output: str | None = None,
                padded: bool = False, **options):
        """The executable (ids [B, S] [, attention_mask] -> logits or hidden states) for
        ``backend``, compiled once from one trace over symbolic B and S."""
        key = (backend, output, padded, tuple(sorted(options.items())))
        if key not in self._compiled:
            self._compiled[key] = graphc.compile(self.trace(output=output, padded=padded),
                                                 backend=backend, **options)
        return self._compiled[key]

    def __call__(self, ids, attention_mask=None, backend: str = "reference",
                 **options) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[None] if ids.ndim == 1 else ids
        if attention_mask is None:
            return self.compile(backend, **options)(ids)
        mask = np.asarray(attention_mask, np.int64).reshape(ids.shape)
        return self.compile(backend, padded=True, **options)(ids, mask)

    def num_params(self) -> int:
        return int(sum(a.size for a in self.params.values()))

    def __repr__(self) -> str:
        return f"Llama({asdict(self.config)})"
