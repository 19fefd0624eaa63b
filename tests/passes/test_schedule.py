"""The schedule pass: tries several topological orders, keeps the one with the lowest
peak of live intermediate bytes, and renumbers node ids so topo_order() follows it."""
import numpy as np
import pytest

import graphc
from graphc.models import transformer
from graphc.passes import NumericCheck, VerifyIR, optimize
from graphc.passes.plan_memory import liveness
from graphc.passes.schedule import (order_dfs, order_greedy, order_lexicographic,
                                    representative_bindings)

from random_graphs import random_graph

PRE = ["simplify", "fold", "cse", "dce"]
ORDERS = ("lexicographic", "dfs", "dfs_reversed", "greedy")


def computing_ids(g):
    return [n for n in g.topo_order() if g.nodes[n].op not in ("input", "constant")]


def assert_topological(g, order):
    comp = set(computing_ids(g))
    assert sorted(order) == sorted(comp)
    pos = {n: k for k, n in enumerate(order)}
    for n in order:
        for i in g.nodes[n].inputs:
            if i in comp:
                assert pos[i] < pos[n], f"%{i} scheduled after its user %{n}"


def candidate_orders(g):
    b = representative_bindings(g)
    return [order_lexicographic(g), order_dfs(g), order_dfs(g, reverse_operands=True),
            order_greedy(g, b)]


def test_encoder_layer_schedule(same_result):
    m = transformer.random(transformer.TransformerConfig(n_layers=1, d_model=64, n_heads=4,
                                                         d_ff=256))
    g = m.trace_layer(0)
    pre = optimize(g, PRE + ["fuse"])
    out = optimize(pre, ["schedule"], instruments=[VerifyIR(), NumericCheck(tol=1e-10)])
    sched = out.meta["schedule"]
    assert set(sched["tried"]) == set(ORDERS)
    assert sched["peak_bytes"] == min(sched["tried"].values())
    assert sched["bindings"] == {"S": 128}
    # The order is real: ids follow it, and topo_order() gives it back.
    assert sched["order"] == computing_ids(out)
    assert out.topo_order() == sorted(out.nodes)
    assert sched["peak_bytes"] == liveness(out).lower_bound({"S": 128})
    assert out.op_counts() == pre.op_counts()
    for order in candidate_orders(pre):
        assert_topological(pre, order)
    same_result(pre, out, sizes={"S": 6})


def branches(x):
    """Two independent branches, each with a big temporary; traced so that ids
    interleave them (both big matmuls first), which is the worst order."""
    w1 = np.random.default_rng(1).standard_normal((8, 512))
    w2 = np.random.default_rng(2).standard_normal((8, 512))
    a1 = x @ w1
    b1 = x @ w2
    a2 = graphc.sum(graphc.relu(a1), axis=-1, keepdims=True)
    b2 = graphc.sum(graphc.tanh(b1), axis=-1, keepdims=True)
    return a2 * b2


@pytest.mark.parametrize("fuse", [False, True])
def test_schedule_finishes_a_branch_before_starting_the_next(fuse, same_result):
    g = graphc.trace(branches, graphc.spec(("S", 8), "float64"))
    pre = optimize(g, ["fuse"] if fuse else [])
    out = optimize(pre, ["schedule", "plan_memory"],
                   instruments=[VerifyIR(), NumericCheck()])
    sched = out.meta["schedule"]
    big = 128 * 512 * 8
    assert sched["tried"]["lexicographic"] >= 2 * big     # both big temporaries at once
    assert sched["peak_bytes"] < 2 * big                  # one at a time
    assert sched["chosen"] != "lexicographic"
    # In the chosen order the first reduction runs before the second matmul.
    ops = [(out.nodes[n].op if not fuse else out.nodes[n].attrs["kind"])
           for n in sched["order"]]
    first_red = ops.index("reduction" if fuse else "sum")
    second_mm = [k for k, op in enumerate(ops) if op in ("matmul", "contraction")][1]
    assert first_red < second_mm, ops
    # The memory plan follows the new order: its lower bound is the schedule's peak.
    plan = out.meta["memory"].for_bindings({"S": 128})
    plan.check()
    assert plan.lower_bound_bytes == sched["peak_bytes"]
    same_result(g, out, sizes={"S": 5})


def test_representative_bindings():
    g = graphc.trace(branches, graphc.spec(("S", 8), "float64"))
    assert representative_bindings(g) == {"S": 128}
    static = graphc.trace(branches, graphc.spec((16, 8), "float64"))
    assert representative_bindings(static) == {}
    out = optimize(static, ["schedule"])
    assert out.meta["schedule"]["bindings"] == {}
    assert out.meta["schedule"]["peak_bytes"] < 2 * 16 * 512 * 8


def test_schedule_drops_a_stale_memory_plan():
    g = graphc.trace(branches, graphc.spec((16, 8), "float64"))
    out = optimize(g, ["plan_memory", "schedule"])
    assert "memory" not in out.meta   # its node ids would be the old ones


def test_schedule_keeps_constants_inputs_outputs():
    def fn(x, y):
        return graphc.relu(x) + 1.0, graphc.tanh(y)
    g = graphc.trace(fn, graphc.spec((3, 4), "float64", name="x"),
                     graphc.spec((3, 4), "float64", name="y"))
    out = optimize(g, ["schedule"], instruments=[VerifyIR(), NumericCheck()])
    assert out.input_names == ["x", "y"]
    assert [out.nodes[o].op for o in out.outputs] == ["add", "tanh"]
    assert sorted(out.constants) == [n.id for n in out.nodes.values() if n.op == "constant"]


@pytest.mark.parametrize("fuse", [False, True])
def test_random_graphs(fuse):
    for seed in range(30):
        g = optimize(random_graph(seed), PRE + (["fuse"] if fuse else []))
        for order in candidate_orders(g):
            assert_topological(g, order)
        out = optimize(g, ["schedule"], instruments=[VerifyIR(), NumericCheck()])
        sched = out.meta["schedule"]
        assert sched["peak_bytes"] == min(sched["tried"].values())
        assert sched["order"] == computing_ids(out)
