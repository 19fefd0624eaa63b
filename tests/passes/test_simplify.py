"""simplify, fold, cse, dce, decompose: each rewrite fires, and semantics are kept."""
import numpy as np
import pytest

import graphc
from graphc.passes import optimize

rng = np.random.default_rng()


def f64(*shape):
    return rng.standard_normal(shape)


def ops_of(g):
    return [n.op for n in g if n.op not in ("input", "constant")]


def test_identities_vanish(same_result):
    def fn(x):
        y = x * np.ones((1, 6)) + np.zeros(6)      # x*1 + 0
        y = graphc.scale(y, 1.0) - np.zeros(())
        y = y.transpose(1, 0).transpose(1, 0)        # double transpose
        y = y.reshape(2, 3, -1).reshape(6, -1).reshape(y.shape)   # reshape chain
        return graphc.relu(y)
    g = graphc.trace(fn, graphc.spec((4, 6), "float64"))
    out = optimize(g, ["simplify", "dce"])
    assert ops_of(out) == ["relu"]
    same_result(g, out)


def test_transposes_compose():
    def fn(x):
        return graphc.exp(x.transpose(1, 2, 0).transpose(0, 2, 1))
    g = graphc.trace(fn, graphc.spec((2, 3, 4), "float64"))
    out = optimize(g, ["simplify"])
    (t,) = [n for n in out if n.op == "transpose"]
    assert t.attrs["axes"] == (1, 0, 2)  # x.transpose(1,2,0).transpose(0,2,1)
    x = f64(2, 3, 4)
    np.testing.assert_allclose(graphc.compile(out)(x), np.exp(x.transpose(1, 0, 2)))


def test_scale_folds_into_the_query_weight(same_result):
    w_q, b_q, w_k = f64(8, 8), f64(8), f64(8, 8)

    def fn(x):
        q = (x @ w_q + b_q).reshape(x.shape[0], 2, 4).transpose(1, 0, 2)
        k = (x @ w_k).reshape(x.shape[0], 2, 4).transpose(1, 0, 2)
        return graphc.softmax(graphc.scale(q @ k.transpose(0, 2, 1), 0.5 ** 0.5 / 2), -1)
    g = graphc.trace(fn, graphc.spec(("S", 8), "float64"))
    out = optimize(g, ["simplify", "dce"])
    assert "scale" not in ops_of(out)
    consts = [out.constants[n.id] for n in out if n.op == "constant"]
    s = 0.5 ** 0.5 / 2
    assert any(c.shape == (8, 8) and np.allclose(c, w_q * s) for c in consts)
    assert any(c.shape == (8,) and np.allclose(c, b_q * s) for c in consts)
    same_result(g, out)


def test_scale_stays_when_the_weight_is_shared(same_result):
    w = f64(8, 8)

    def fn(x):
        h = x @ w
        return graphc.scale(h, 0.3) + h     # h has two users: scaling W would change both
    g = graphc.trace(fn, graphc.spec((3, 8), "float64"))
    out = optimize(g, ["simplify", "dce"])
    assert "scale" in ops_of(out)
    same_result(g, out)


def test_scalar_mul_becomes_scale_and_scales_merge(same_result):
    def fn(x):
        return graphc.tanh(graphc.scale(x * np.array(3.0), 0.5))
    g = graphc.trace(fn, graphc.spec((5,), "float64"))
    out = optimize(g, ["simplify", "dce"])
    (s,) = [n for n in out if n.op == "scale"]
    assert s.attrs["factor"] == pytest.approx(1.5)
    same_result(g, out)


def test_fold_computes_constant_subgraphs(same_result):
    w = f64(6, 4)

    def fn(x):
        return x @ (w.T.T * 2.0 + 1.0).T.T
    g = graphc.trace(fn, graphc.spec((3, 6), "float64"))
    out = optimize(g, ["fold", "dce"])
    assert ops_of(out) == ["matmul"]
    same_result(g, out)


def test_fold_leaves_symbolic_nodes():
    table = f64(16, 4)

    def fn(x):
        return x + graphc.constant(table)[: x.shape[0]]
    g = graphc.trace(fn, graphc.spec(("S", 4), "float64"))
    out = optimize(g, ["fold", "dce"])
    assert "slice" in ops_of(out)


def test_cse_merges_duplicates(same_result):
    def fn(x):
        a = graphc.exp(x) + 1.0
        b = graphc.exp(x) + 1.0
        return a * b
    g = graphc.trace(fn, graphc.spec((4,), "float64"))
    out = optimize(g, ["cse", "dce"])
    assert ops_of(out).count("exp") == 1 and ops_of(out).count("add") == 1
    same_result(g, out)


def test_cse_keeps_different_attrs_apart():
    def fn(x):
        return graphc.softmax(x, axis=0) + graphc.softmax(x, axis=1)
    g = graphc.trace(fn, graphc.spec((3, 3), "float64"))
    assert ops_of(optimize(g, ["cse", "dce"])).count("softmax") == 2


def test_dce_drops_unused_work():
    def fn(x):
        graphc.exp(x)          # result unused
        return graphc.relu(x)
    g = graphc.trace(fn, graphc.spec((4,), "float64"))
    assert ops_of(optimize(g, ["dce"])) == ["relu"]


def test_decompose_elementwise_composites(same_result):
    def fn(x):
        return graphc.gelu(x) + graphc.silu(x) + graphc.gelu(x, approximate="tanh")
    g = graphc.trace(fn, graphc.spec((4, 5), "float64"))
    out = optimize(g, ["decompose"])
    assert not {"gelu", "silu"} & set(ops_of(out))
    same_result(g, out, tol=1e-12)


def test_o1_keeps_the_textbook_model(same_result):
    from graphc.models import transformer
    cfg = transformer.TransformerConfig(vocab_size=40, d_model=16, n_heads=2, d_ff=32,
                                        n_layers=2, causal=True, dtype="float64")
    g = transformer.random(cfg, seed=2).trace()
    same_result(g, optimize(g, "O1"), sizes={"S": 9})
