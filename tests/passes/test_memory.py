"""Memory planning: intermediates share one arena without two live buffers overlapping;
in-place reuse and reshape views where safe; close to the lower bound on the model."""
import dataclasses

import numpy as np
import pytest

import graphc
from graphc.models import transformer
from graphc.passes import NumericCheck, VerifyIR, optimize
from graphc.passes.plan_memory import MemoryPlan, MemoryPlanner, liveness, plan_memory_for

from random_graphs import random_graph

PRE = ["simplify", "fold", "cse", "dce"]
PATTERNS = ["fuse_patterns", "simplify", "cse", "dce"]
TAIL = ["fuse", "schedule", "plan_memory"]


@pytest.fixture(scope="module")
def textbook_768():
    """The textbook Transformer at d_model=768, 12 heads, ffn 3072 (2 layers); only
    planned, never run, so it stays cheap."""
    m = transformer.random(transformer.TransformerConfig(d_model=768, n_heads=12, d_ff=3072))
    return m.trace()


@pytest.mark.parametrize("S", [128, 1024])
@pytest.mark.parametrize("patterns", [False, True])
def test_textbook_arena(textbook_768, S, patterns):
    out = optimize(textbook_768, PRE + (PATTERNS if patterns else []) + TAIL,
                   instruments=[VerifyIR()])
    planner = out.meta["memory"]
    assert isinstance(planner, MemoryPlanner)
    plan = planner.for_bindings({"S": S})
    plan.check()
    assert plan.arena_bytes * 2 <= plan.naive_bytes, plan.summary()
    assert plan.arena_bytes <= 1.1 * plan.lower_bound_bytes, plan.summary()
    assert plan.lower_bound_bytes <= plan.arena_bytes
    again = plan_memory_for(out, {"S": S})
    assert (again.arena_bytes, again.naive_bytes, again.lower_bound_bytes) == \
        (plan.arena_bytes, plan.naive_bytes, plan.lower_bound_bytes)
    # Graph outputs are allocated apart from the arena.
    assert not set(out.outputs) & set(plan.offsets)


def small_model():
    return transformer.random(transformer.TransformerConfig(n_layers=1, d_model=64,
                                                            n_heads=4, d_ff=256))


def test_encoder_layer_pipeline():
    g = small_model().trace_layer(0)
    out = optimize(g, PRE + TAIL, instruments=[VerifyIR(), NumericCheck()])
    plan = out.meta["memory"].for_bindings({"S": 64})
    plan.check()
    # every fused group but the last (the output) has an offset
    fused = [n.id for n in out.nodes.values() if n.op == "fused"]
    assert sorted(plan.offsets) == sorted(set(fused) - set(out.outputs))
    assert all(off % 64 == 0 for off in plan.offsets.values())


def test_static_graph_gets_a_plan_symbolic_a_planner():
    m = small_model()
    static = optimize(m.trace_layer(0, seq_len=32), PRE + TAIL)
    plan = static.meta["memory"]
    assert isinstance(plan, MemoryPlan)
    plan.check()
    assert plan.for_bindings({"S": 999}) is plan
    symbolic = optimize(m.trace_layer(0), PRE + TAIL)
    planner = symbolic.meta["memory"]
    assert isinstance(planner, MemoryPlanner)
    p32 = planner.for_bindings({"S": 32})
    assert planner.for_bindings({"S": 32}) is p32          # cached per bindings
    assert (p32.arena_bytes, p32.naive_bytes, p32.lower_bound_bytes) == \
        (plan.arena_bytes, plan.naive_bytes, plan.lower_bound_bytes)
    assert planner.for_bindings({"S": 64}).arena_bytes > p32.arena_bytes


W = np.random.default_rng(0).standard_normal((8, 8))


def plan_of(fn, shape=(16, 8), passes=("plan_memory",)):
    g = graphc.trace(fn, graphc.spec(shape, "float64"))
    out = optimize(g, list(passes), instruments=[VerifyIR(), NumericCheck()])
    plan = out.meta["memory"]
    plan.check()
    return out, plan


def ids(g, op):
    return [n.id for n in g.nodes.values() if n.op == op]


def test_elementwise_chain_runs_in_place():
    def fn(x):
        a = x @ W
        b = graphc.relu(a)
        c = graphc.neg(b)
        return c @ W
    g, plan = plan_of(fn)
    (a, _), (b,), (c,) = ids(g, "matmul"), ids(g, "relu"), ids(g, "neg")
    assert plan.inplace == [(b, a), (c, b)]
    assert plan.offsets[a] == plan.offsets[b] == plan.offsets[c]
    assert plan.arena_bytes == plan.lower_bound_bytes == 16 * 8 * 8
    assert plan.naive_bytes == 3 * 16 * 8 * 8


def test_no_in_place_while_the_operand_is_still_needed():
    def fn(x):
        a = x @ W
        b = graphc.relu(a)                # a is read again below: relu cannot take it
        return graphc.tanh((b @ W) + a)   # the add may take b @ W's buffer
    g, plan = plan_of(fn)
    a, m2 = ids(g, "matmul")
    (b,), (add,), (tanh,) = ids(g, "relu"), ids(g, "add"), ids(g, "tanh")
    assert plan.inplace == [(add, m2)]
    assert plan.offsets[b] != plan.offsets[a]
    assert tanh not in plan.offsets     # a graph output: allocated apart


def test_no_in_place_into_a_smaller_operand():
    def fn(x):
        s = graphc.sum(x @ W, axis=-1, keepdims=True)   # [16, 1]
        return (x + s) @ W                               # add is [16, 8]
    g, plan = plan_of(fn)
    assert plan.inplace == []


def test_reshape_is_a_view():
    def fn(x):
        a = graphc.relu(x)
        r = a.reshape(16, 2, 4)                 # views a's buffer
        v = x.reshape(8, 16)                    # views the input: no arena bytes
        return graphc.sum(graphc.exp(r), axis=-1) @ np.ones((2, 3)), graphc.tanh(v)
    g, plan = plan_of(fn)
    ra, rx = ids(g, "reshape")
    a = ids(g, "relu")[0]
    assert plan.views == {ra: a, rx: g.inputs[0]}
    assert plan.buffer_of[ra] == a and plan.offsets[ra] == plan.offsets[a]
    assert rx not in plan.offsets
    # a's bytes stay reserved until the view's last reader (exp) has run
    exp = ids(g, "exp")[0]
    assert plan.buffer_intervals[a][1] >= liveness(g).step[exp]


def test_reshape_only_group_is_a_view():
    def fn(x):
        r = x.reshape(8, 16)
        return (r @ np.ones((16, 4))) + (r @ np.ones((16, 4)) * 2.0).sum()
    g = graphc.trace(fn, graphc.spec((16, 8), "float64"))
    out = optimize(g, ["fuse", "plan_memory"], instruments=[VerifyIR(), NumericCheck()])
    only = [n.id for n in out.nodes.values()
            if n.op == "fused" and n.meta["group"] == "reshape"]
    assert len(only) == 1
    plan = out.meta["memory"]
    plan.check()
    assert plan.views == {only[0]: out.inputs[0]}
    assert only[0] not in plan.offsets


def test_check_catches_overlapping_live_buffers():
    def fn(x):
        a = x @ W
        b = x @ W.T
        return a @ b.T
    g, plan = plan_of(fn)
    a, b = ids(g, "matmul")[:2]
    assert plan.offsets[a] != plan.offsets[b]      # both live at the third matmul
    bad = dataclasses.replace(plan, offsets={**plan.offsets, b: plan.offsets[a]},
                              buffer_of={**plan.buffer_of})
    with pytest.raises(AssertionError, match="overlaps"):
        bad.check()
    skew = dataclasses.replace(plan, offsets={**plan.offsets, a: plan.offsets[a] + 8})
    with pytest.raises(AssertionError, match="aligned"):
        skew.check()


def test_summary_names_the_three_numbers():
    _, plan = plan_of(lambda x: graphc.relu(x @ W) @ W)
    text = plan.summary()
    assert "naive" in text and "arena" in text and "lower bound" in text


@pytest.mark.parametrize("fused", [False, True])
def test_random_graphs(fused):
    tail = (["fuse"] if fused else []) + ["schedule", "plan_memory"]
    for seed in range(40):
        out = optimize(random_graph(seed), PRE + tail, instruments=[VerifyIR()])
        for S in (1, 7, 300):
            plan = plan_memory_for(out, {"S": S})
            plan.check()
            assert plan.lower_bound_bytes <= plan.arena_bytes <= plan.naive_bytes
            assert not set(out.outputs) & set(plan.offsets)
