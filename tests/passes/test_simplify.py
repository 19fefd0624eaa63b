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


def test_simplify_is_a_rule_set_in_the_pattern_language():
    from graphc.passes import RuleSet
    from graphc.passes.patterns import Op, Rule
    from graphc.passes.simplify import RULES
    assert isinstance(RULES, RuleSet) and RULES.name == "simplify"
    assert all(isinstance(r, Rule) and isinstance(r.pattern, Op) for r in RULES)
    assert {"x * 1 => x", "x + 0 => x", "scale(x, 1) => x",
            "transpose(transpose(x)) => transpose(x)", "reshape(reshape(x)) => reshape(x)",
            "scale(scale(x, a), b) => scale(x, a*b)", "x * scalar => scale(x, scalar)"} \
        <= set(RULES.names)
    # identities come before merges at the same op (x * 1 is dropped, not made a scale)
    names = RULES.names
    assert names.index("x * 1 => x") < names.index("x * scalar => scale(x, scalar)")


def test_chains_collapse_even_when_the_inner_node_is_shared(same_result):
    """Collapsing transpose(transpose(x)) copies nothing, so an inner transpose with another
    user does not stop it (the fusion rules' no-duplication condition is not theirs)."""
    def fn(x):
        t = x.transpose(1, 0)
        return graphc.exp(t.transpose(1, 0)) + 1.0, graphc.tanh(t)
    g = graphc.trace(fn, graphc.spec((3, 4), "float64"))
    out = optimize(g, ["simplify", "dce"])
    (t,) = [n for n in out if n.op == "transpose"]
    (e,) = [n for n in out if n.op == "exp"]
    assert list(e.inputs) == [out.inputs[0]]
    assert out.nodes[t.inputs[0]].op == "input"
    same_result(g, out)


def test_simplify_explain_reports_only_weight_folds():
    """simplify's rules fire silently (no fired / missed flood in --explain); folding a
    scale into a weight is reported."""
    from graphc.passes import Explain
    w = f64(8, 8)
    g = graphc.trace(lambda x: graphc.scale((x @ w) * 1.0, 0.5), graphc.spec((3, 8), "float64"))
    ex = Explain()
    optimize(g, ["simplify"], instruments=[ex])
    assert [e["kind"] for e in ex.events] == ["fold_scale"]


def test_small_constant_powers_become_products(same_result):
    """pow(x, 2) and pow(x, 3) with a constant exponent are products (a kernel's pow is
    a libm call per element); another exponent, or a computed one, stays a pow."""
    def fn(x, y):
        a = graphc.abs(x) + 0.5                      # a positive base for 2.5 and y
        return graphc.pow(x, 2.0) + graphc.pow(x, 3.0) + graphc.pow(a, 2.5) + \
            graphc.pow(a, y)
    g = graphc.trace(fn, graphc.spec((4, 6), "float64"), graphc.spec((4, 6), "float64"))
    out = optimize(g, ["simplify", "dce"])
    assert ops_of(out).count("pow") == 2 and ops_of(out).count("mul") == 3
    same_result(g, out)


@pytest.mark.parametrize("form", ["merged_operands", "split_result", "unit_dim"])
def test_batch_reshapes_move_one_way_and_settle(form, same_result):
    """The batch-reshape rules: a [B*H] bmm read as [B, H] ends as one 4-D matmul; a bmm
    whose operands merge [B, H] keeps one reshape after its matmul; the rules never undo
    each other (a fixed point in a few rounds, not MAX_ROUNDS), and a reshape that only
    adds a unit dim is no batch split."""
    from graphc.passes import simplify as S
    from graphc.passes.instruments import Explain
    if form == "merged_operands":
        def fn(q, k):
            return q.reshape(6, 5, 4) @ k.reshape(6, 4, 7)
        specs = [graphc.spec((2, 3, 5, 4), "float64"), graphc.spec((2, 3, 4, 7), "float64")]
    elif form == "split_result":
        def fn(q, k):
            return graphc.softmax((q @ k).reshape(2, 3, 5, 7), axis=-1)
        specs = [graphc.spec((6, 5, 4), "float64"), graphc.spec((6, 4, 7), "float64")]
    else:
        def fn(q, k):
            return q[0] @ k[0]
        specs = [graphc.spec((1, 3, 5, 4), "float64"), graphc.spec((1, 3, 4, 7), "float64")]
    g = graphc.trace(fn, *specs)
    rounds = []                 # rewrites fired per simplify run
    real = S.apply

    def counting(*a, **k):
        out = real(*a, **k)
        rounds.append(out)
        return out
    S.apply = counting
    try:
        out = optimize(g, ["simplify", "dce"])
    finally:
        S.apply = real
    assert sum(rounds) < 10, f"{sum(rounds)} rewrites: the rules undo each other"
    mm = [n for n in out if n.op == "matmul"]
    assert len(mm) == 1
    if form == "split_result":
        assert mm[0].type.rank == 4      # the matmul in the softmax's [2, 3] batch
    elif form == "merged_operands":
        assert mm[0].type.rank == 4 and ops_of(out) == ["matmul", "reshape"]
    else:
        assert mm[0].type.rank == 3      # untouched
    same_result(g, out)
