"""GPT-2 (``transformers`` ``GPT2Model`` / ``GPT2LMHeadModel``) in graphc's API.

Learned token and position embeddings, N pre-norm blocks of causal multi-head
self-attention and a gelu_tanh ("gelu_new") MLP, a final LayerNorm and the lm_head tied
to the token embedding. Written in the natural batched form: ids [B, S] -> q, k, v
[B, H, S, D] -> scores [B, H, S, S] -> head merge [B, S, H*D] (the O2 attention rewrite
turns the scores / softmax / PV sequence into one attention kernel).

    from graphc.models import gpt2
    model = gpt2.from_hf(hf_model)                 # a transformers GPT2LMHeadModel
    model = gpt2.from_state_dict(hf_config, sd)    # or its config and state_dict
    exe = model.compile("numba")                   # one trace over ("B", "S")
    logits = exe(ids)                              # ids int64 [B, S] -> [B, S, vocab]

Parameters keep the Hugging Face names without the ``transformer.`` prefix. GPT-2's
``Conv1D`` stores its weights [in, out], so a projection is ``x @ W + b`` as written.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

import graphc
from graphc.errors import AttrError, CheckpointError

# transformers' activation names -> graphc.gelu's approximate / other activations
_ACTS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
         "gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}


@dataclass(frozen=True)
class GPT2Config:
    """GPT-2's hyper-parameters, with the Hugging Face ``GPT2Config`` names."""
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None              # None: 4 * n_embd
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise AttrError(f"GPT2Config: n_embd {self.n_embd} is not a multiple of n_head "
                            f"{self.n_head}")
        if self.activation_function not in _ACTS:
            raise AttrError(f"GPT2Config: activation_function {self.activation_function!r} "
                            f"is not supported ({', '.join(_ACTS)})")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @classmethod
    def from_hf(cls, config, dtype: str = "float32") -> "GPT2Config":
        """From a ``transformers.GPT2Config`` (or its ``to_dict()``); unknown keys ignored.
        Refuses what this port does not implement (``reorder_and_upcast_attn`` only
        changes float16 rounding and is ignored)."""
        d = config if isinstance(config, dict) else config.to_dict()
        names = set(cls.__dataclass_fields__) - {"dtype"}
        return cls(**{k: d[k] for k in names if k in d}, dtype=dtype)


def param_shapes(c: GPT2Config) -> dict[str, tuple]:
    """Every parameter's name (the Hugging Face one, without ``transformer.``) and shape."""
    d, f = c.n_embd, c.inner
    want = {"wte.weight": (c.vocab_size, d), "wpe.weight": (c.n_positions, d),
            "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for l in range(c.n_layer):
        p = f"h.{l}."
        want.update({p + "ln_1.weight": (d,), p + "ln_1.bias": (d,),
                     p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
                     p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
                     p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
                     p + "mlp.c_fc.weight": (d, f), p + "mlp.c_fc.bias": (f,),
                     p + "mlp.c_proj.weight": (f, d), p + "mlp.c_proj.bias": (d,)})
    return want


def random(config: GPT2Config | None = None, seed: int = 0) -> "GPT2":
    """A GPT-2 with seeded random parameters (no transformers needed; by default a tiny
    2-layer one): matrices ~N(0, 1/fan_in), norm gains ~1, small biases."""
    c = config or GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=97, n_positions=64)
    return GPT2(c, random_params(param_shapes(c), c.dtype, seed, fan_in_axis=0))


def random_params(shapes: dict, dtype: str, seed: int,
                  fan_in_axis: int = -1) -> dict[str, np.ndarray]:
    """Seeded random parameters of the given shapes: 2-D ~N(0, 1/fan_in) (the size of
    ``fan_in_axis``: 0 for GPT-2's [in, out] Conv1D, -1 for torch's [out, in] Linear),
    1-D norm gains (names with ln / norm, ending in weight) 1 + N(0, 0.1^2), other 1-D
    N(0, 0.1^2)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in shapes.items():
        if len(shape) == 1:
            gain = k.endswith("weight") and ("ln" in k or "norm" in k.lower())
            out[k] = (1.0 if gain else 0.0) + 0.1 * rng.standard_normal(shape)
        else:
            out[k] = rng.standard_normal(shape) / np.sqrt(shape[fan_in_axis])
    return {k: v.astype(dtype) for k, v in out.items()}


def from_state_dict(config, state_dict, dtype: str = "float32") -> "GPT2":
    """A GPT-2 model from a config (:class:`GPT2Config`, a ``transformers.GPT2Config`` or
    its dict) and a ``GPT2Model`` / ``GPT2LMHeadModel`` state_dict (torch tensors or NumPy
    arrays). Raises :class:`graphc.CheckpointError` naming missing, unexpected or
    misshapen tensors."""
    if not isinstance(config, GPT2Config):
        config = GPT2Config.from_hf(config, dtype)
    c = config
    want = param_shapes(c)
    sd = {}
    for k, v in state_dict.items():
        k = k[len("transformer."):] if k.startswith("transformer.") else k
        if k == "lm_head.weight" or k.endswith((".attn.bias", ".attn.masked_bias")):
            continue    # lm_head is tied to wte (checked below); old causal-mask buffers
        sd[k] = _numpy(v)
    lm = state_dict.get("lm_head.weight")
    if lm is not None and "wte.weight" in sd and not np.array_equal(_numpy(lm), sd["wte.weight"]):
        raise CheckpointError("lm_head.weight differs from wte.weight: this GPT-2 port ties "
                              "them, as GPT2LMHeadModel does")
    params = _check(sd, want, "GPT-2")
    return GPT2(c, {k: v.astype(c.dtype) for k, v in params.items()})


def from_hf(hf_model, dtype: str = "float32") -> "GPT2":
    """A GPT-2 model holding the weights of a ``transformers`` ``GPT2Model`` or
    ``GPT2LMHeadModel`` (in ``dtype``)."""
    return from_state_dict(hf_model.config, hf_model.state_dict(), dtype)


def _numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):                            # a torch tensor
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _check(sd: dict, want: dict, what: str) -> dict:
    missing = sorted(set(want) - set(sd))
    extra = sorted(set(sd) - set(want))
    bad = sorted(f"{k} {list(sd[k].shape)} (expected {list(want[k])})"
                 for k in set(want) & set(sd) if tuple(sd[k].shape) != tuple(want[k]))
    if missing or extra or bad:
        parts = [f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "",
                 f"misshapen {bad}" if bad else ""]
        raise CheckpointError(f"{what} state_dict: " + "; ".join(p for p in parts if p))
    return {k: sd[k] for k in want}


# ---------------------------------------------------------------------------------------
# The forward pass (traced)

def attention(x, P, pre: str, c: GPT2Config, layer: int):
    """Causal multi-head self-attention of one block. x: [B, S, d] -> [B, S, d]."""
    B, S, _ = x.shape
    H, D = c.n_head, c.head_dim
    qkv = x @ P[pre + "c_attn.weight"] + P[pre + "c_attn.bias"]                 # [B, S, 3d]
    q, k, v = graphc.split(qkv, 3, axis=-1)

    def heads(t):                                   # [B, S, d] -> [B, H, S, D]
        return t.reshape(B, S, H, D).transpose(0, 2, 1, 3)

    q, k, v = heads(q), heads(k), heads(v)
    scale = 1.0
    if c.scale_attn_weights:
        scale /= math.sqrt(D)
    if c.scale_attn_by_inverse_layer_idx:
        scale /= layer + 1
    scores = (q @ k.transpose(0, 1, 3, 2)) * scale + graphc.causal_mask(S, S, dtype=c.dtype)
    o = graphc.softmax(scores, axis=-1) @ v                                        # [B,H,S,D]
    o = o.transpose(0, 2, 1, 3).reshape(B, S, H * D)
    return o @ P[pre + "c_proj.weight"] + P[pre + "c_proj.bias"]


def mlp(x, P, pre: str, c: GPT2Config):
    h = x @ P[pre + "c_fc.weight"] + P[pre + "c_fc.bias"]
    act = _ACTS[c.activation_function]
    if act in ("gelu", "gelu_tanh"):
        h = graphc.gelu(h, approximate="tanh" if act == "gelu_tanh" else "none")
    else:
        h = getattr(graphc, act)(h)
    return h @ P[pre + "c_proj.weight"] + P[pre + "c_proj.bias"]


def block(x, P, layer: int, c: GPT2Config):
    """Pre-norm block: x += attn(LN(x)); x += mlp(LN(x))."""
    p = f"h.{layer}."
    eps = c.layer_norm_epsilon
    x = x + attention(graphc.layernorm(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"], eps=eps),
                      P, p + "attn.", c, layer)
    return x + mlp(graphc.layernorm(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"], eps=eps),
                   P, p + "mlp.", c)


class GPT2:
    """GPT-2 with its parameters; compiled once per backend for any (batch, sequence)."""

    def __init__(self, config: GPT2Config, params: dict[str, np.ndarray]):
        self.config = config
        self.params = params
        self._compiled: dict = {}

    def _constants(self) -> dict:
        P = {k: graphc.constant(v, name=k) for k, v in self.params.items()}
        P["lm_head.weight^T"] = graphc.constant(self.params["wte.weight"].T,
                                                name="wte.weight^T")      # tied, no copy
        return P

    def hidden_states(self, ids):
        """Traced body: ids int [B, S] -> the last hidden states [B, S, n_embd] (after
        ln_f, as GPT2Model's last_hidden_state)."""
        c = self.config
        P = self._constants()
        S = ids.shape[1]
        x = graphc.embedding(P["wte.weight"], ids) + P["wpe.weight"][:S]          # [B, S, d]
        for layer in range(c.n_layer):
            x = block(x, P, layer, c)
        return graphc.layernorm(x, P["ln_f.weight"], P["ln_f.bias"], eps=c.layer_norm_epsilon)

    def forward(self, ids):
        """Traced body: ids int [B, S] -> logits [B, S, vocab] (the tied lm_head)."""
        return self.hidden_states(ids) @ self._constants()["lm_head.weight^T"]

    def trace(self, batch="B", seq_len="S", output: str = "logits") -> graphc.Graph:
        """The graph for ids [batch, seq_len] (symbols or ints); ``output`` is 'logits'
        or 'hidden' (the last hidden states)."""
        body = {"logits": self.forward, "hidden": self.hidden_states}.get(output)
        if body is None:
            raise graphc.InputError(f"output must be 'logits' or 'hidden', got {output!r}")
        return graphc.trace(body, graphc.spec((batch, seq_len), "int64", name="ids"),
                            name="gpt2" if output == "logits" else "gpt2_hidden")

    def compile(self, backend: str = "reference", output: str = "logits", **options):
        """The executable (ids [B, S] -> logits or hidden states) for ``backend``, compiled
        once from one trace over symbolic B and S."""
        key = (backend, output, tuple(sorted(options.items())))
        if key not in self._compiled:
            self._compiled[key] = graphc.compile(self.trace(output=output), backend=backend,
                                                 **options)
        return self._compiled[key]

    def __call__(self, ids, backend: str = "reference", **options) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.shape[1] > self.config.n_positions:
            raise graphc.InputError(f"{ids.shape[1]} tokens exceed n_positions "
                                    f"{self.config.n_positions}")
        return self.compile(backend, **options)(ids)

    def num_params(self) -> int:
        return int(sum(a.size for a in self.params.values()))

    def __repr__(self) -> str:
        return f"GPT2({asdict(self.config)})"
