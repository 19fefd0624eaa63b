"""The textbook Transformer against a plain NumPy implementation written here."""
import numpy as np
import pytest

import graphc
from graphc.models import transformer


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_transformer(params, cfg, ids, dtype):
    """Independent implementation: per-head loops, explicit positional table."""
    P = {k: v.astype(dtype) for k, v in params.items()}
    S, d, h = len(ids), cfg.d_model, cfg.n_heads
    dk = d // h
    x = P["embed"][ids]
    if cfg.positional:
        pos = np.arange(S)[:, None].astype(np.float64)
        pe = np.zeros((S, d))
        for i in range(0, d, 2):
            pe[:, i] = np.sin(pos[:, 0] / 10000 ** (i / d))
            pe[:, i + 1] = np.cos(pos[:, 0] / 10000 ** (i / d))
        # The model stores its table as a parameter in the model dtype (float32).
        x = x + pe.astype(cfg.dtype).astype(dtype)
    for l in range(cfg.n_layers):
        L = lambda n: P[f"layers.{l}.{n}"]  # noqa: E731
        q, k, v = (x @ L("w" + c) + L("b" + c) for c in "qkv")
        heads = []
        for j in range(h):
            sl = slice(j * dk, (j + 1) * dk)
            s = q[:, sl] @ k[:, sl].T / np.sqrt(dk)
            if cfg.causal:
                s = np.where(np.tril(np.ones((S, S), bool)), s, -np.inf)
            heads.append(_softmax(s) @ v[:, sl])
        attn = np.concatenate(heads, axis=1) @ L("wo") + L("bo")
        x = _ln(x + attn, L("ln1.weight"), L("ln1.bias"), cfg.eps)
        f = np.maximum(x @ L("w1") + L("b1"), 0) @ L("w2") + L("b2")
        x = _ln(x + f, L("ln2.weight"), L("ln2.bias"), cfg.eps)
    return _softmax(x @ P["out.weight"] + P["out.bias"])


def rel_err(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("positional", [True, False])
def test_transformer_matches_numpy(causal, positional):
    rng = np.random.default_rng()
    cfg = transformer.TransformerConfig(vocab_size=97, d_model=32, n_heads=4, d_ff=64,
                                        n_layers=2, max_len=64, causal=causal,
                                        positional=positional)
    model = transformer.random(cfg, seed=int(rng.integers(1 << 30)))
    exe32 = graphc.compile(model.trace(), backend="reference")
    exe64 = graphc.compile(model.trace(), backend="reference", float64=True)
    for S in (1, 7, 33):  # one graph, several sequence lengths
        ids = rng.integers(0, cfg.vocab_size, size=S)
        ref64 = numpy_transformer(model.params, cfg, ids, np.float64)
        out32 = exe32(ids)
        assert out32.dtype == np.float32 and out32.shape == (S, cfg.vocab_size)
        assert rel_err(out32, ref64) < 1e-5
        out64 = exe64(ids)
        assert out64.dtype == np.float64
        assert rel_err(out64, ref64) < 1e-12


def test_model_call_and_layer_graph():
    rng = np.random.default_rng()
    cfg = transformer.TransformerConfig(vocab_size=50, d_model=16, n_heads=2, d_ff=32,
                                        n_layers=1, max_len=32)
    model = transformer.random(cfg, seed=3)
    ids = rng.integers(0, 50, size=9)
    np.testing.assert_allclose(model(ids), numpy_transformer(model.params, cfg, ids,
                                                             np.float64), rtol=1e-4)
    g = model.trace_layer(0)
    graphc.verify(g)
    assert g.input_types[0] == graphc.TensorType(("S", 16), "float32")
    assert g.op_counts()["layernorm"] == 2 and g.op_counts()["softmax"] == 1


def test_seeded_params_are_reproducible():
    cfg = transformer.TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_ff=32,
                                        vocab_size=20)
    a = transformer.init_params(cfg, seed=5)
    b = transformer.init_params(cfg, seed=5)
    c = transformer.init_params(cfg, seed=6)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["layers.0.wq"], c["layers.0.wq"])


def test_too_long_sequence_is_an_error():
    cfg = transformer.TransformerConfig(vocab_size=20, d_model=8, n_heads=2, d_ff=16,
                                        n_layers=1, max_len=8)
    exe = graphc.compile(transformer.random(cfg).trace())
    with pytest.raises(graphc.GraphcError, match="slice"):
        exe(np.arange(9) % 20)


def test_bad_config():
    with pytest.raises(graphc.GraphcError, match="multiple of n_heads"):
        transformer.TransformerConfig(d_model=10, n_heads=4)
