"""The seed's textbook Transformer (``shared/seeds/textbook-transformer.md``).

Token embedding (+ sinusoidal positions, switchable), N post-norm layers of multi-head
self-attention and a ReLU feed-forward, then a final linear layer and softmax over the
vocabulary. Linear weights are stored ``[in, out]`` so a projection is ``x @ W + b``.

    from graphc.models import transformer
    model = transformer.random(transformer.TransformerConfig(n_layers=2), seed=0)
    g = model.trace()                       # graph for a symbolic sequence length S
    probs = model(ids, backend="reference")  # ids: int64 [S]
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

import graphc


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 1000
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    n_layers: int = 2
    max_len: int = 2048
    positional: bool = True     # add sinusoidal position encodings to the embeddings
    causal: bool = False        # mask attention to earlier positions (decoder-style)
    eps: float = 1e-5           # LayerNorm epsilon
    dtype: str = "float32"

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise graphc.AttrError(f"d_model {self.d_model} is not a multiple of n_heads "
                                   f"{self.n_heads}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


def sinusoidal_positions(max_len: int, d_model: int) -> np.ndarray:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)) (float64)."""
    pos = np.arange(max_len)[:, None]
    i = np.arange(0, d_model, 2)[None, :]
    angle = pos / np.power(10000.0, i / d_model)
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return pe


def init_params(config: TransformerConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random parameters (scaled normal weights, small random biases and norms)."""
    rng = np.random.default_rng(seed)
    d, f, v = config.d_model, config.d_ff, config.vocab_size

    def lin(n_in, n_out):
        return rng.standard_normal((n_in, n_out)) / math.sqrt(n_in)

    p = {"embed": rng.standard_normal((v, d))}
    if config.positional:
        p["pos"] = sinusoidal_positions(config.max_len, d)
    for l in range(config.n_layers):
        pre = f"layers.{l}."
        for name in ("wq", "wk", "wv", "wo"):
            p[pre + name] = lin(d, d)
            p[pre + "b" + name[1]] = 0.02 * rng.standard_normal(d)
        p[pre + "ln1.weight"] = 1 + 0.1 * rng.standard_normal(d)
        p[pre + "ln1.bias"] = 0.1 * rng.standard_normal(d)
        p[pre + "w1"] = lin(d, f)
        p[pre + "b1"] = 0.02 * rng.standard_normal(f)
        p[pre + "w2"] = lin(f, d)
        p[pre + "b2"] = 0.02 * rng.standard_normal(d)
        p[pre + "ln2.weight"] = 1 + 0.1 * rng.standard_normal(d)
        p[pre + "ln2.bias"] = 0.1 * rng.standard_normal(d)
    p["out.weight"] = lin(d, v)
    p["out.bias"] = 0.02 * rng.standard_normal(v)
    return {k: a.astype(config.dtype) for k, a in p.items()}


def attention(x, P, pre: str, config: TransformerConfig):
    """Multi-head self-attention of one layer on x: [S, d]."""
    h, dk = config.n_heads, config.d_head
    S = x.shape[0]

    def heads(t):  # [S, d] -> [h, S, dk]
        return t.reshape(S, h, dk).transpose(1, 0, 2)

    q = heads(x @ P[pre + "wq"] + P[pre + "bq"])
    k = heads(x @ P[pre + "wk"] + P[pre + "bk"])
    v = heads(x @ P[pre + "wv"] + P[pre + "bv"])
    scores = graphc.scale(q @ k.transpose(0, 2, 1), 1.0 / math.sqrt(dk))
    if config.causal:
        scores = scores + graphc.causal_mask(S, S, dtype=config.dtype)
    p = graphc.softmax(scores, axis=-1)
    o = (p @ v).transpose(1, 0, 2).reshape(S, config.d_model)
    return o @ P[pre + "wo"] + P[pre + "bo"]


def feed_forward(x, P, pre: str):
    """ReLU(x W1 + b1) W2 + b2"""
    return graphc.relu(x @ P[pre + "w1"] + P[pre + "b1"]) @ P[pre + "w2"] + P[pre + "b2"]


def encoder_layer(x, P, layer: int, config: TransformerConfig):
    """Post-norm layer: x = LN(x + MHA(x)); x = LN(x + FFN(x))."""
    pre = f"layers.{layer}."
    x = graphc.layernorm(x + attention(x, P, pre, config), P[pre + "ln1.weight"],
                         P[pre + "ln1.bias"], eps=config.eps)
    x = graphc.layernorm(x + feed_forward(x, P, pre), P[pre + "ln2.weight"],
                         P[pre + "ln2.bias"], eps=config.eps)
    return x


class Transformer:
    """The textbook Transformer with its parameters."""

    def __init__(self, config: TransformerConfig, params: dict[str, np.ndarray]):
        self.config = config
        self.params = params
        self._compiled: dict = {}

    def _constants(self) -> dict:
        # Named constants make the IR readable ("layers.0.wq" instead of an anonymous array).
        return {k: graphc.constant(v, name=k) for k, v in self.params.items()}

    def forward(self, ids):
        """Traced body: ids int [S] -> probabilities [S, vocab]."""
        c = self.config
        P = self._constants()
        x = graphc.embedding(P["embed"], ids)
        if c.positional:
            x = x + P["pos"][: ids.shape[0]]
        for layer in range(c.n_layers):
            x = encoder_layer(x, P, layer, c)
        return graphc.softmax(x @ P["out.weight"] + P["out.bias"], axis=-1)

    def trace(self, seq_len="S") -> graphc.Graph:
        """The graph of the whole model for ``seq_len`` tokens (a symbol or an int)."""
        return graphc.trace(self.forward, graphc.spec((seq_len,), "int64", name="ids"),
                            name="transformer")

    def trace_layer(self, layer: int = 0, seq_len="S") -> graphc.Graph:
        """The graph of one encoder layer: x [S, d_model] -> [S, d_model]."""
        c = self.config

        def layer_fn(x):
            return encoder_layer(x, self._constants(), layer, c)
        return graphc.trace(layer_fn, graphc.spec((seq_len, c.d_model), c.dtype, name="x"),
                            name=f"encoder_layer{layer}")

    def __call__(self, ids: np.ndarray, backend: str = "reference", **options) -> np.ndarray:
        key = (backend, tuple(sorted(options.items())))
        if key not in self._compiled:
            self._compiled[key] = graphc.compile(self.trace(), backend=backend, **options)
        return self._compiled[key](ids)

    def __repr__(self) -> str:
        return f"Transformer({asdict(self.config)})"


def random(config: TransformerConfig | None = None, seed: int = 0) -> Transformer:
    """A Transformer with seeded random parameters."""
    config = config or TransformerConfig()
    return Transformer(config, init_params(config, seed))


def torch_encoder_layer(config: TransformerConfig, params: dict, layer: int = 0,
                        dtype: str = "float32"):
    """``torch.nn.TransformerEncoderLayer`` (post-LN, ReLU, batch_first) holding layer
    ``layer``'s weights of ``params``, in ``dtype``: the peer that tests and benchmarks
    compare graphc's encoder layer with. Needs torch (the ``compare`` extra)."""
    import torch
    pre = f"layers.{layer}."
    P = params
    m = torch.nn.TransformerEncoderLayer(config.d_model, config.n_heads, config.d_ff,
                                         dropout=0.0, activation="relu", batch_first=True,
                                         norm_first=False, layer_norm_eps=config.eps)
    m = m.to(getattr(torch, dtype))

    def T(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))
    with torch.no_grad():
        m.self_attn.in_proj_weight.copy_(T(np.concatenate(
            [P[pre + "wq"].T, P[pre + "wk"].T, P[pre + "wv"].T])))
        m.self_attn.in_proj_bias.copy_(T(np.concatenate(
            [P[pre + "bq"], P[pre + "bk"], P[pre + "bv"]])))
        m.self_attn.out_proj.weight.copy_(T(P[pre + "wo"].T))
        m.self_attn.out_proj.bias.copy_(T(P[pre + "bo"]))
        m.linear1.weight.copy_(T(P[pre + "w1"].T))
        m.linear1.bias.copy_(T(P[pre + "b1"]))
        m.linear2.weight.copy_(T(P[pre + "w2"].T))
        m.linear2.bias.copy_(T(P[pre + "b2"]))
        for k in (1, 2):
            getattr(m, f"norm{k}").weight.copy_(T(P[pre + f"ln{k}.weight"]))
            getattr(m, f"norm{k}").bias.copy_(T(P[pre + f"ln{k}.bias"]))
    return m.eval()
