"""Named rewrite rules: they fire where expected, explain why not elsewhere, and keep
semantics."""
from collections import Counter

import numpy as np
import pytest

import graphc
from graphc.models import transformer
from graphc.passes import Explain, NumericCheck, VerifyIR, optimize
from graphc.passes.patterns import Op, Rule, Var, register_rule, unregister_rule

PIPE = ["simplify", "fold", "cse", "dce", "fuse_patterns", "simplify", "cse", "dce"]
rng = np.random.default_rng()


def ops_of(g):
    return Counter(n.op for n in g if n.op not in ("input", "constant"))


def run(g, **kw):
    ex = Explain()
    out = optimize(g, PIPE, instruments=[VerifyIR(), NumericCheck(**kw), ex])
    return out, ex


@pytest.mark.parametrize("causal", [False, True])
def test_textbook_layer_rules(causal, same_result):
    cfg = transformer.TransformerConfig(d_model=32, n_heads=4, d_ff=64, n_layers=1,
                                        vocab_size=30, causal=causal)
    g = transformer.random(cfg, seed=0).trace_layer(0)
    out, ex = run(g)
    fired = Counter(e["rule"] for e in ex.fired())
    assert fired == {
        "softmax(scale(q @ k^T) [+ mask]) @ v => attention": 1,
        "x @ w + b => gemm": 5,              # q, k, v, output projection, ffn2
        "relu(x @ w + b) => gemm+relu": 1,   # ffn1
        "layernorm(a + residual) => add_layernorm": 2,
    }
    ops = ops_of(out)
    assert ops["attention"] == 1 and ops["gemm"] == 6 and ops["add_layernorm"] == 2
    assert not {"softmax", "matmul", "layernorm", "relu", "scale", "add"} & set(ops)
    (att,) = [n for n in out if n.op == "attention"]
    assert att.attrs["causal"] is causal
    # the 1/sqrt(d_k) scale went into W_Q, so the attention op has scale 1
    assert att.attrs["scale"] == 1.0
    (relu_gemm,) = [n for n in out if n.op == "gemm" and n.attrs["activation"] == "relu"]
    assert relu_gemm.type.shape[-1] == 64
    same_result(g, out, sizes={"S": 13}, tol=1e-6)


def test_attention_with_explicit_scale_and_no_folding(same_result):
    def fn(q, k, v):
        return graphc.softmax(graphc.scale(q @ k.transpose(0, 2, 1), 0.125), axis=-1) @ v
    specs = [graphc.spec((2, "S", 8), "float64"), graphc.spec((2, "T", 8), "float64"),
             graphc.spec((2, "T", 4), "float64")]
    g = graphc.trace(fn, *specs)
    out, _ = run(g)
    (att,) = [n for n in out if n.op == "attention"]
    assert att.attrs["scale"] == 0.125 and not att.attrs["causal"]
    assert ops_of(out) == {"attention": 1}   # k's transpose cancelled against the rule's
    same_result(g, out, sizes={"S": 5, "T": 7})


def test_attention_does_not_fire_when_scores_are_reused():
    def fn(q, k, v):
        s = q @ k.T
        return graphc.softmax(s, axis=-1) @ v, s    # scores are also an output
    g = graphc.trace(fn, *[graphc.spec(("S", 4), "float64")] * 3)
    out, ex = run(g)
    assert "attention" not in ops_of(out)
    reasons = [e["reason"] for e in ex.missed("softmax(scale(q @ k^T) [+ mask]) @ v => attention")]
    assert any("the graph output" in r for r in reasons)


def test_prenorm_residual_is_not_merged_and_explain_says_why():
    w, b = rng.standard_normal(16), rng.standard_normal(16)

    def fn(x, y):
        h = x + y
        return graphc.layernorm(h, w, b) + h      # h is used again after the norm
    g = graphc.trace(fn, graphc.spec((4, 16), "float64"), graphc.spec((4, 16), "float64"))
    out, ex = run(g)
    assert ops_of(out)["layernorm"] == 1 and "add_layernorm" not in ops_of(out)
    (miss,) = ex.missed("layernorm(a + residual) => add_layernorm")
    assert "also used by" in miss["reason"]
    assert "test_patterns.py" in miss["message"]


@pytest.mark.parametrize("form", ["rsqrt", "div"])
def test_handwritten_layernorm_becomes_layernorm(form, same_result):
    w, b = rng.standard_normal(12), rng.standard_normal(12)

    def fn(x):
        mu = x.mean(axis=-1, keepdims=True)
        xc = x - mu
        var = (xc * xc).mean(axis=-1, keepdims=True)
        if form == "rsqrt":
            return xc * graphc.rsqrt(var + 1e-5) * w + b
        return xc / graphc.sqrt(var + 1e-5) * w + b
    g = graphc.trace(fn, graphc.spec(("S", 12), "float64"))
    out, ex = run(g)
    assert ops_of(out) == {"layernorm": 1}
    (ln,) = [n for n in out if n.op == "layernorm"]
    assert ln.attrs["eps"] == pytest.approx(1e-5)
    same_result(g, out)


def test_handwritten_rmsnorm_becomes_rmsnorm(same_result):
    w = rng.standard_normal(10)

    def fn(x):
        return x * graphc.rsqrt((x * x).mean(axis=-1, keepdims=True) + 1e-6) * w
    g = graphc.trace(fn, graphc.spec((3, 10), "float64"))
    out, _ = run(g)
    assert ops_of(out) == {"rmsnorm": 1}
    same_result(g, out)


def test_layernorm_over_a_non_last_axis_is_left_alone():
    w, b = rng.standard_normal(5), rng.standard_normal(5)

    def fn(x):
        mu = x.mean(axis=0, keepdims=True)
        xc = x - mu
        return xc * graphc.rsqrt((xc * xc).mean(axis=0, keepdims=True) + 1e-5) * w + b
    g = graphc.trace(fn, graphc.spec((5, 5), "float64"))
    out, ex = run(g)
    assert "layernorm" not in ops_of(out)
    assert any("axis" in e["reason"] for e in ex.missed(
        "(x - mean) * rsqrt(var + eps) * w + b => layernorm"))


@pytest.mark.parametrize("act,attr", [("gelu", "gelu"), ("silu", "silu"), ("relu", "relu")])
def test_gemm_epilogues(act, attr, same_result):
    w, b = rng.standard_normal((6, 7)), rng.standard_normal(7)

    def fn(x):
        return getattr(graphc, act)(x @ w + b)
    g = graphc.trace(fn, graphc.spec((2, "S", 6), "float64"))
    out, _ = run(g)
    (gm,) = [n for n in out if n.op == "gemm"]
    assert gm.attrs["activation"] == attr and ops_of(out) == {"gemm": 1}
    same_result(g, out, tol=1e-12)


def test_bias_over_the_wrong_axis_is_not_a_gemm(same_result):
    w, b = rng.standard_normal((6, 6)), rng.standard_normal((3, 1))

    def fn(x):
        return x @ w + b      # b broadcasts over rows, not the output features
    g = graphc.trace(fn, graphc.spec((3, 6), "float64"))
    out, ex = run(g)
    assert "gemm" not in ops_of(out)
    assert any("not a bias" in e["reason"] for e in ex.missed("x @ w + b => gemm"))
    same_result(g, out)


def test_user_rule_in_a_few_lines(same_result):
    rule = Rule("-(-x) => x", Op("neg", Op("neg", Var("x"))), lambda m: m["x"])
    register_rule(rule)
    try:
        g = graphc.trace(lambda x: graphc.exp(-(-x)), graphc.spec((4,), "float64"))
        out, ex = run(g)
        assert ops_of(out) == {"exp": 1}
        assert len(ex.fired("-(-x) => x")) == 1
        x = rng.standard_normal(4)
        np.testing.assert_allclose(graphc.compile(out)(x), np.exp(x))
    finally:
        unregister_rule("-(-x) => x")


def test_whole_model_o2_patterns(same_result):
    cfg = transformer.TransformerConfig(vocab_size=40, d_model=16, n_heads=2, d_ff=32,
                                        n_layers=2, causal=True)
    g = transformer.random(cfg, seed=4).trace()
    out, ex = run(g)
    ops = ops_of(out)
    assert ops["attention"] == 2 and ops["add_layernorm"] == 4
    assert ops["gemm"] == 2 * 6 + 1      # per layer 6, plus the vocabulary projection
    same_result(g, out, sizes={"S": 6}, tol=1e-6)


def _sdpa_as_exported(B=2, H=4, Hkv=2, S=5, T=7, D=8, dtype="float64"):
    """torch's SDPA decomposition as torch.onnx writes it: sqrt(scale) on q and on k^T,
    k^T through flattened batch dims (reshape, 3-D transpose, reshape), kv heads repeated
    by expand + reshape (GQA), a bool mask added as where(mask, 0, -inf), and the NaN
    guard where(isnan(p), 0, p) after the softmax."""
    c = float(D) ** -0.25

    def fn(q, k, v, keep):
        def rep(x):
            x = graphc.reshape(x, shape=(B, Hkv, 1, T, D))
            x = graphc.broadcast_to(x, shape=(B, Hkv, H // Hkv, T, D))
            return graphc.reshape(x, shape=(B, H, T, D))
        kt = graphc.transpose(graphc.reshape(rep(k), shape=(B * H, T, D)), axes=(0, 2, 1))
        kt = graphc.scale(graphc.reshape(kt, shape=(B, H, D, T)), c)
        bias = graphc.where(keep, graphc.constant(np.zeros((), dtype)),
                            graphc.constant(np.full((), -np.inf, dtype)))
        p = graphc.softmax(graphc.scale(q, c) @ kt + bias, axis=-1)
        p = graphc.where(graphc.isnan(p), graphc.constant(np.zeros((), dtype)), p)
        return p @ rep(v)
    specs = [graphc.spec((B, H, S, D), dtype), graphc.spec((B, Hkv, T, D), dtype),
             graphc.spec((B, Hkv, T, D), dtype), graphc.spec((B, 1, S, T), "bool")]
    return graphc.trace(fn, *specs)


def test_exported_sdpa_form_is_one_attention(same_result):
    """The form fuses: one attention op reading k and v with their 2 KV heads, both
    sqrt(scale) factors in its scale, and the same result as the unfused graph."""
    g = _sdpa_as_exported()
    out, ex = run(g)
    assert ex.fired() and ops_of(out)["attention"] == 1
    assert "softmax" not in ops_of(out) and "broadcast_to" not in ops_of(out)
    (att,) = [n for n in out if n.op == "attention"]
    assert att.attrs["scale"] == pytest.approx(8 ** -0.5)
    for i in att.inputs[1:3]:
        assert out.nodes[i].type.shape == (2, 2, 7, 8)      # kv heads read, not copied
    same_result(g, out)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # the O0 softmax's 0/0
def test_nan_guard_keeps_rows_without_keys_zero(rng):
    """A query whose mask row is all False sees no key: the guard makes its output 0,
    and so does the fused attention, on the reference and numba."""
    g = _sdpa_as_exported(dtype="float32")
    q, k, v = (rng.standard_normal(s).astype(np.float32)
               for s in ((2, 4, 5, 8), (2, 2, 7, 8), (2, 2, 7, 8)))
    keep = rng.random((2, 1, 5, 7)) < 0.7
    keep[:, :, :, 0] = True
    keep[1, 0, 2] = False                       # query 2 of batch 1: no key
    want = graphc.compile(g, backend="reference", level="O0", float64=True)(q, k, v, keep)
    assert np.all(want[1, :, 2] == 0) and np.abs(want).sum() > 0
    for backend in ("reference", "numba"):
        exe = graphc.compile(g, backend=backend)
        assert "attention" in exe.graph.op_counts() or any(
            n.op == "fused" and "attention" in {m.op for m in n.attrs["body"].nodes.values()}
            for n in exe.graph.nodes.values())
        got = exe(q, k, v, keep)
        assert not np.isnan(got).any()
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5, backend


def test_nan_guard_with_another_fill_is_not_fused():
    """where(isnan(p), 1, p) is not the guard the attention op can keep: explain says so."""
    def fn(q, k, v):
        p = graphc.softmax(q @ graphc.transpose(k, axes=(0, 2, 1)), axis=-1)
        return graphc.where(graphc.isnan(p), graphc.constant(np.ones(())), p) @ v
    g = graphc.trace(fn, *[graphc.spec((2, 5, 4), "float64")] * 3)
    out, ex = run(g)
    assert "attention" not in ops_of(out)
    reasons = [e["reason"] for e in ex.missed("softmax(scale(q @ k^T) [+ mask]) @ v => attention")]
    assert any("not 0" in r for r in reasons), reasons


@pytest.mark.parametrize("form", ["torch", "halved_last"])
def test_tanh_gelu_written_out_becomes_gelu_then_a_gemm_epilogue(form, same_result):
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) over x @ w + b (torch's
    decomposition of gelu(approximate="tanh"), as its ONNX exporter writes it) is one
    gemm with the gelu_tanh epilogue."""
    c = float(np.sqrt(2 / np.pi))

    def fn(x, w, b):
        h = x @ w + b
        t = graphc.tanh(graphc.scale(h + graphc.scale(h * h * h, 0.044715), c))
        one_plus = t + graphc.constant(np.ones((), np.float64))
        if form == "torch":
            return graphc.scale(h, 0.5) * one_plus
        return graphc.scale(h * one_plus, 0.5)
    g = graphc.trace(fn, graphc.spec(("S", 8), "float64"), graphc.spec((8, 16), "float64"),
                     graphc.spec((16,), "float64"))
    out, ex = run(g)
    assert ops_of(out) == {"gemm": 1}, ops_of(out)
    (gemm,) = [n for n in out if n.op == "gemm"]
    assert gemm.attrs["activation"] == "gelu_tanh"
    same_result(g, out, sizes={"S": 5})


def test_gelu_like_with_another_constant_is_left_alone():
    def fn(x):
        t = graphc.tanh(graphc.scale(x + graphc.scale(x * x * x, 0.05), 0.8))
        return graphc.scale(x, 0.5) * (t + graphc.constant(np.ones((), np.float64)))
    g = graphc.trace(fn, graphc.spec((4, 8), "float64"))
    out, _ = run(g)
    assert "gelu" not in ops_of(out) and "tanh" in ops_of(out)
