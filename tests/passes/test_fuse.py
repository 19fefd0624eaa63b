"""The fuse pass: every computing node ends up in a ``fused`` group, groups follow the
kind rules (one anchor, no duplicated work, no cycles), and the result computes the same."""
from collections import Counter

import numpy as np
import pytest

import graphc
from graphc.ir import verify
from graphc.models import transformer
from graphc.passes import Explain, NumericCheck, VerifyIR, optimize
from graphc.passes.fuse import ANCHOR_ROLES, CLONED_VIEWS, role

from random_graphs import random_graph

PRE = ["simplify", "fold", "cse", "dce"]
PATTERNS = ["fuse_patterns", "simplify", "cse", "dce"]
FULL = PRE + ["fuse", "schedule", "plan_memory"]


def small_model(dtype="float32"):
    return transformer.random(transformer.TransformerConfig(
        n_layers=1, d_model=64, n_heads=4, d_ff=256, dtype=dtype))


def computing(g):
    return [n for n in g.nodes.values() if n.op not in ("input", "constant")]


def groups(g):
    return [n for n in g.nodes.values() if n.op == "fused"]


def check_groups(before, after):
    """Structural invariants of a fused graph against the graph it was made from."""
    assert all(n.op == "fused" for n in computing(after)), after
    members = []
    for n in groups(after):
        body = n.attrs["body"]
        verify(body)
        assert len(body.outputs) == 1
        ops = computing(body)
        anchors = [b for b in ops if role(b) in ANCHOR_ROLES]
        assert len(anchors) <= 1, f"{n.meta['group']} has anchors {[a.op for a in anchors]}"
        kind = n.attrs["kind"]
        if anchors:
            want = "attention" if anchors[0].op == "attention" else role(anchors[0])
            assert kind == want
        else:
            assert kind in ("elementwise", "movement")
        assert len(ops) == len(n.meta["members"])
        members += list(zip(n.meta["members"], [b.op for b in ops]))
    # Never duplicated, never lost: each original computing node is in exactly one group;
    # the only nodes beyond them are the copies of a shared reshape / transpose / slice
    # the pass makes for each of its readers (fuse.CLONED_VIEWS).
    original = {n.id for n in computing(before)}
    assert sorted(m for m, _ in members if m in original) == sorted(original)
    assert all(op in CLONED_VIEWS for m, op in members if m not in original), members


def run_pipeline(g, patterns=False, tol=None):
    """pre-passes, then fuse + schedule + plan_memory under VerifyIR and NumericCheck;
    returns (graph before fuse, result)."""
    pre = optimize(g, PRE + (PATTERNS if patterns else []), instruments=[VerifyIR()])
    out = optimize(pre, ["fuse", "schedule", "plan_memory"],
                   instruments=[VerifyIR(), NumericCheck(tol=tol)])
    return pre, out


def names(g):
    return Counter(n.meta["group"] for n in groups(g))


# -- the textbook encoder layer --------------------------------------------------------

RAW_LAYER = Counter({
    "matmul+add": 3,                               # q, k, v projections + bias
    "reshape+transpose+matmul": 1,                 # q @ k^T reading both as head views
    "softmax": 1,
    "reshape+transpose+matmul+transpose": 1,       # p @ v, stored as [S, h, dk]
    "reshape+matmul+add+add": 1,                   # out-projection + bias + residual
    "layernorm": 2,
    "matmul+add+relu": 1,                          # ffn1
    "matmul+add+add": 1,                           # ffn2 + bias + residual
})

PATTERN_LAYER = Counter({
    "gemm": 5,                                     # q, k, v, ffn1 (relu inside), ffn2
    "reshape+transpose+attention+transpose": 1,    # heads in, [S, h, dk] out
    "reshape+gemm": 1,                             # out-projection reads [S, d] view
    "add_layernorm": 2,
})


def test_encoder_layer_raw_grouping(same_result):
    g = small_model().trace_layer(0)
    out = optimize(g, FULL, instruments=[VerifyIR(), NumericCheck()])
    pre = optimize(g, PRE)
    check_groups(pre, optimize(pre, ["fuse"]))
    assert names(out) == RAW_LAYER, out
    kinds = Counter(n.attrs["kind"] for n in groups(out))
    assert kinds == {"contraction": 8, "reduction": 3}
    for S in (5, 33):
        same_result(pre, out, sizes={"S": S}, seed=S)


def test_encoder_layer_with_patterns_grouping(same_result):
    g = small_model().trace_layer(0)
    out = optimize(g, PRE + PATTERNS + ["fuse", "schedule", "plan_memory"],
                   instruments=[VerifyIR(), NumericCheck()])
    assert names(out) == PATTERN_LAYER, out
    kinds = Counter(n.attrs["kind"] for n in groups(out))
    assert kinds == {"contraction": 6, "attention": 1, "reduction": 2}
    pre = optimize(g, PRE + PATTERNS)
    check_groups(pre, optimize(pre, ["fuse"]))
    same_result(pre, out, sizes={"S": 9}, seed=1)


@pytest.mark.parametrize("patterns", [False, True])
def test_encoder_layer_float64_exact(patterns, same_result):
    """In float64 every pass of the pipeline keeps the result to 1e-10."""
    g = small_model("float64").trace_layer(0)
    pre, out = run_pipeline(g, patterns, tol=1e-10)
    check_groups(pre, optimize(pre, ["fuse"]))
    same_result(g, out, sizes={"S": 12}, seed=3)


@pytest.mark.parametrize("patterns,count", [(False, 14), (True, 12)])
def test_whole_model(patterns, count, same_result):
    g = small_model().trace()
    pre, out = run_pipeline(g, patterns, tol=1e-10)
    check_groups(pre, optimize(pre, ["fuse"]))
    assert len(groups(out)) == count
    # embedding + positional slice + add is one elementwise group
    assert names(out)["embedding+slice+add"] == 1
    same_result(pre, out, sizes={"S": 7}, seed=0)


def test_print_shows_groups():
    out = optimize(small_model().trace_layer(0), FULL)
    text = str(out)
    assert "group matmul+add+relu" in text
    assert "graph matmul+add+relu(" in text  # the body, nested under its node


def test_explain_reports_groups_and_refusals():
    ex = Explain()
    out = optimize(small_model().trace_layer(0), PRE + ["fuse"], instruments=[ex])
    formed = [e for e in ex.events if e["kind"] == "group"]
    assert len(formed) == len(groups(out))
    reasons = " | ".join(e["reason"] for e in ex.events if e["kind"] == "not_fused")
    assert "second anchor" in reasons
    assert "has 2 users" in reasons            # the first layernorm feeds ffn1 and the residual
    assert "would create a cycle" in reasons   # ... so it cannot join the residual add
    assert "not a strided view" in reasons     # transpose -> reshape before the out-proj


# -- hand-made graphs ------------------------------------------------------------------

def trace(fn, *shapes):
    return graphc.trace(fn, *(graphc.spec(s, "float64") for s in shapes))


W = np.random.default_rng(0).standard_normal((8, 8))


def test_no_cycle_through_an_anchor(same_result):
    """a -> b and a -> c -> b with c an anchor: a cannot join b (cycle through c)."""
    def fn(x):
        a = graphc.relu(x)
        c = a @ W
        return a + c
    g = trace(fn, ("S", 8))
    ex = Explain()
    out = optimize(g, ["fuse"], instruments=[VerifyIR(), ex])
    check_groups(g, out)
    assert sorted(names(out)) == ["matmul+add", "relu"]
    whys = [e["reason"] for e in ex.events if e["kind"] == "not_fused"]
    assert "would create a cycle" in " ".join(whys)
    same_result(g, out, sizes={"S": 4})


def test_cycle_check_on_the_group_graph():
    """The reachability check itself: merging a with b would close a -> c -> b."""
    from graphc.passes.fuse import _Groups

    def fn(x):
        a = graphc.relu(x)
        c = a @ W
        return a + c
    g = trace(fn, ("S", 8))
    a, c, b = (g.nodes[n].id for n in g.topo_order()
               if g.nodes[n].op in ("relu", "matmul", "add"))
    grp = _Groups(g, [a, c, b])
    assert grp.would_cycle(a, b) and grp.would_cycle(b, a)
    assert not grp.would_cycle(a, c) and not grp.would_cycle(c, b)
    grp.merge(c, b)
    assert not grp.would_cycle(a, c)   # a -> {c, b} is a plain edge now


def test_shared_producer_is_not_duplicated(same_result):
    def fn(x):
        e = graphc.exp(graphc.tanh(x))
        return (e @ W) + (e @ W.T)
    g = trace(fn, (4, 8))
    ex = Explain()
    out = optimize(g, ["fuse"], instruments=[ex])
    check_groups(g, out)
    bodies = [n.attrs["body"] for n in groups(out)]
    assert sum(b.op_counts().get("exp", 0) for b in bodies) == 1
    assert "tanh+exp" in names(out)
    assert any("has 2 users" in e["message"] for e in ex.events if e["kind"] == "not_fused")
    same_result(g, out)


def test_diamond_fuses_into_one_group(same_result):
    """A value used twice inside one elementwise group is computed once."""
    def fn(x):
        e = graphc.exp(graphc.tanh(x))
        return graphc.relu(e) - graphc.neg(e)
    g = trace(fn, (4, 8))
    out = optimize(g, ["fuse"])
    check_groups(g, out)
    (grp,) = groups(out)
    assert grp.attrs["body"].op_counts()["exp"] == 1
    assert grp.attrs["kind"] == "elementwise"
    same_result(g, out)


def test_graph_output_is_not_fused_into_its_user(same_result):
    def fn(x):
        a = graphc.tanh(x)
        return a, graphc.relu(a)
    g = trace(fn, (4, 8))
    out = optimize(g, ["fuse"])
    check_groups(g, out)
    assert len(groups(out)) == 2
    same_result(g, out)


def test_gemm_absorbs_operand_transposes_only(same_result):
    def fn(x, y):
        t = y.T                      # [8, S]: transB, absorbed
        h = graphc.relu(x)           # elementwise prologue: not absorbed by a GEMM
        return graphc.scale(h @ t, 0.5)
    g = trace(fn, ("S", 8), ("S", 8))
    ex = Explain()
    out = optimize(g, ["fuse"], instruments=[ex])
    check_groups(g, out)
    assert sorted(names(out)) == ["relu", "transpose+matmul+scale"]
    assert any("takes no relu prologue" in e["message"] for e in ex.events
               if e["kind"] == "not_fused")
    same_result(g, out, sizes={"S": 5})


def test_reduction_takes_prologue_and_same_size_epilogue(same_result):
    def fn(x, y):
        p = graphc.softmax(graphc.scale(x + y, 0.5), axis=-1)
        return graphc.relu(p)
    g = trace(fn, ("S", 8), ("S", 8))
    out = optimize(g, ["fuse"])
    check_groups(g, out)
    assert list(names(out)) == ["add+scale+softmax+relu"]
    assert groups(out)[0].attrs["kind"] == "reduction"
    same_result(g, out, sizes={"S": 3})


def test_reduction_epilogue_never_broadcasts_bigger(same_result):
    def fn(x):
        s = graphc.sum(x, axis=-1, keepdims=True)   # [S, 1]
        return x - s                                  # [S, 8]: bigger than the anchor
    g = trace(fn, ("S", 8))
    ex = Explain()
    out = optimize(g, ["fuse"], instruments=[ex])
    check_groups(g, out)
    assert sorted(names(out)) == ["sub", "sum"]
    assert any("broadcasts" in e["message"] for e in ex.events if e["kind"] == "not_fused")
    same_result(g, out, sizes={"S": 3})


def test_movement_fuses_into_consumer(same_result):
    def fn(x):
        return graphc.exp(x.reshape(4, 2, 4).transpose(1, 0, 2))
    g = trace(fn, (4, 8))
    out = optimize(g, ["fuse"])
    check_groups(g, out)
    assert list(names(out)) == ["reshape+transpose+exp"]
    assert groups(out)[0].attrs["kind"] == "elementwise"
    same_result(g, out)


def test_opaque_stays_alone(same_result):
    def fn(x):
        v, i = graphc.topk(graphc.relu(x), 3)
        return graphc.exp(v)
    g = trace(fn, (4, 8))
    out = optimize(g, ["dce", "fuse"], instruments=[VerifyIR()])
    check_groups(optimize(g, ["dce"]), out)
    assert sorted(names(out)) == ["exp", "relu", "topk"]
    assert [n.attrs["kind"] for n in groups(out) if n.meta["group"] == "topk"] == ["opaque"]
    same_result(g, out)


def test_constants_stay_outside_scalars_inline():
    def fn(x):
        return graphc.relu(x @ W + 1.0)
    g = trace(fn, (4, 8))
    out = optimize(g, ["fuse"])
    (grp,) = groups(out)
    ops = [out.nodes[i].op for i in grp.inputs]
    assert ops == ["input", "constant"]               # x and W are operands
    body = grp.attrs["body"]
    assert [n.op for n in body.nodes.values()].count("constant") == 1  # the 1.0 literal


def test_fuse_is_idempotent():
    once = optimize(small_model().trace_layer(0), FULL)
    twice = optimize(once, ["fuse"], instruments=[VerifyIR()])
    assert twice.op_counts() == once.op_counts()
    assert names(twice) == names(once)


# -- differential fuzzing: random graphs ---------------------------------------------

@pytest.mark.parametrize("patterns", [False, True])
def test_random_graphs(patterns):
    for seed in range(40):
        g = random_graph(seed)
        pre, out = run_pipeline(g, patterns)   # NumericCheck: 1e-10 (float64 graphs)
        check_groups(pre, optimize(pre, ["fuse"]))


def test_existing_groups_are_kept_and_rewired(same_result):
    """A graph with a fused node and new raw ops around it: the old group stays as it is
    and reads the new groups (nothing is left unfused)."""
    def inner(x):
        return graphc.tanh(x) * 2.0
    first = optimize(trace(inner, (4, 8)), ["fuse"])
    (old,) = groups(first)

    def fn(x):
        from graphc.frontend.tracer import current_builder
        y = graphc.relu(x) + 1.0
        b = current_builder()
        node = b.graph.add_node("fused", [y.id], dict(old.attrs), old.type)
        return graphc.exp(b.wrap(node.id))
    g = trace(fn, (4, 8))
    out = optimize(g, ["fuse"], instruments=[VerifyIR()])
    assert all(n.op == "fused" for n in computing(out))
    assert sorted(n.meta.get("group", "kept") for n in groups(out)) == \
        ["exp", "kept", "relu+add"]
    same_result(g, out)
