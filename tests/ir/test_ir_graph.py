"""Graph structure: verify on good and deliberately broken graphs, copy independence,
replace_all_uses / remove_node keeping networkx and the nodes in sync."""
import numpy as np
import pytest

import graphc
from graphc.ir import TensorType
from graphc.ops import build_node, get_op

TOL = 1e-5


def compile_traced(g):
    """Run the graph exactly as traced (no passes), so a failure points at this layer."""
    return graphc.compile(g, level="O0")


def rel_err(got, want):
    return np.linalg.norm((got - want).ravel()) / np.linalg.norm(want.ravel())


def mlp():
    """x [S,4] -> relu(x @ w1 + b1) @ w2, plus x * 2 as a second output."""
    r = np.random.default_rng(0)
    w1 = r.standard_normal((4, 8)).astype(np.float32)
    b1 = r.standard_normal(8).astype(np.float32)
    w2 = r.standard_normal((8, 3)).astype(np.float32)

    def fn(x):
        return graphc.relu(x @ w1 + b1) @ w2, x * 2.0

    return graphc.trace(fn, graphc.spec(("S", 4))), (w1, b1, w2)


def node_of(g, op):
    return next(n for n in g.nodes.values() if n.op == op)


def test_verify_passes_on_traced_graphs():
    g, _ = mlp()
    graphc.verify(g)
    for fn, specs in [
        (lambda x: graphc.softmax(x[1:] @ x[1:].T, axis=0), [graphc.spec(("S", 3))]),
        (lambda x, y: graphc.concat(x, y, axis=0).reshape(-1), [graphc.spec(("S", 2)),
                                                                graphc.spec(("T", 2))]),
        (lambda x: graphc.topk(x, 2), [graphc.spec(("S", 5))]),
        (lambda x: tuple(graphc.split(x, 2, axis=1)), [graphc.spec(("S", 4), "float64")]),
    ]:
        graphc.verify(graphc.trace(fn, *specs))


def test_verify_rejects_wrong_declared_type():
    g, _ = mlp()
    n = node_of(g, "relu")
    n.type = TensorType(("S", 9), "float32")
    with pytest.raises(graphc.VerifyError) as err:
        graphc.verify(g)
    assert f"%{n.id}" in str(err.value) and "relu" in str(err.value)
    assert "f32[S,9]" in str(err.value) and "f32[S,8]" in str(err.value)


def test_verify_rejects_wrong_declared_dtype():
    g, _ = mlp()
    n = node_of(g, "scale")
    n.type = n.type.with_dtype("float64")
    with pytest.raises(graphc.VerifyError):
        graphc.verify(g)


def test_verify_rejects_removed_edge():
    g, _ = mlp()
    n = node_of(g, "add")
    g.nx.remove_edge(n.inputs[1], n.id, key=1)
    with pytest.raises(graphc.VerifyError) as err:
        graphc.verify(g)
    assert "edges" in str(err.value) and f"%{n.id}" in str(err.value)


def test_verify_rejects_extra_edge():
    g, _ = mlp()
    n = node_of(g, "relu")
    g.nx.add_edge(g.inputs[0], n.id, key=1)
    with pytest.raises(graphc.VerifyError):
        graphc.verify(g)


def test_verify_rejects_cycle_made_by_set_inputs():
    g, _ = mlp()
    add, relu = node_of(g, "add"), node_of(g, "relu")
    mm = g.nodes[add.inputs[0]]
    assert mm.op == "matmul"
    # matmul now reads relu's output, which depends on the matmul: a cycle.
    g.set_inputs(mm.id, [relu.id, mm.inputs[1]])
    with pytest.raises(graphc.VerifyError) as err:
        graphc.verify(g)
    assert "cycle" in str(err.value)


def test_verify_rejects_constant_with_wrong_value_shape():
    g, (w1, _, _) = mlp()
    cid = next(i for i, v in g.constants.items() if v is w1)
    g.constants[cid] = np.zeros((4, 7), np.float32) + 1
    with pytest.raises(graphc.VerifyError) as err:
        graphc.verify(g)
    assert "constant" in str(err.value) and f"%{cid}" in str(err.value)


def test_verify_rejects_constant_with_wrong_value_dtype_or_none():
    g, (w1, b1, _) = mlp()
    cid = next(i for i, v in g.constants.items() if v is w1)
    g.constants[cid] = w1.astype(np.float64)
    with pytest.raises(graphc.VerifyError):
        graphc.verify(g)
    g, (w1, b1, _) = mlp()
    del g.constants[next(i for i, v in g.constants.items() if v is b1)]
    with pytest.raises(graphc.VerifyError):
        graphc.verify(g)


def test_verify_rejects_bad_inputs_and_outputs():
    g, _ = mlp()
    g.outputs.append(999)
    with pytest.raises(graphc.VerifyError):
        graphc.verify(g)
    g, _ = mlp()
    g.inputs.append(node_of(g, "relu").id)
    with pytest.raises(graphc.VerifyError):
        graphc.verify(g)
    g, _ = mlp()
    g.nx.add_node(12345)
    with pytest.raises(graphc.VerifyError):
        graphc.verify(g)


def test_verify_rejects_unknown_op():
    g, _ = mlp()
    node_of(g, "relu").op = "nope"
    with pytest.raises(graphc.GraphcError):
        graphc.verify(g)


def test_copy_is_independent(rng):
    g, (w1, b1, w2) = mlp()
    before_text, before_edges = str(g), sorted(g.nx.edges(keys=True))
    c = g.copy()
    assert str(c) == before_text
    graphc.verify(c)
    # Mutate the copy every way a pass might.
    relu = node_of(c, "relu")
    neg = build_node(c, get_op("neg"), [relu.inputs[0]], {}, None)
    c.replace_all_uses(relu.id, neg.id)
    c.remove_node(relu.id)
    node_of(c, "scale").attrs["factor"] = 3.0
    node_of(c, "scale").meta["group"] = 7
    cid = next(i for i, v in c.constants.items() if v is b1)
    c.constants[cid] = -b1
    c.outputs.reverse()
    c.meta["note"] = "changed"
    c.name = "copy"
    graphc.verify(c)
    # The original is untouched and still computes the same thing.
    assert str(g) == before_text
    assert sorted(g.nx.edges(keys=True)) == before_edges
    assert "note" not in g.meta and g.name == "fn"
    graphc.verify(g)
    x = np.asarray(rng.standard_normal((3, 4)), np.float32)
    y, z = compile_traced(g)(x)
    assert rel_err(y, np.maximum(x @ w1 + b1, 0) @ w2) < TOL
    assert rel_err(z, 2 * x) < TOL
    z2, y2 = compile_traced(c)(x)
    assert rel_err(y2, -(x @ w1 - b1) @ w2) < TOL
    assert rel_err(z2, 3 * x) < TOL


def test_replace_all_uses_and_remove_node(rng):
    """y = relu(x); out = (y + y, y): replace y by x * 3 everywhere, then drop relu."""
    def fn(x):
        y = graphc.relu(x)
        return y + y, y

    g = graphc.trace(fn, graphc.spec(("S", 2)))
    relu = node_of(g, "relu")
    add = node_of(g, "add")
    with pytest.raises(ValueError):
        g.remove_node(relu.id)               # still used
    with pytest.raises(ValueError):
        g.remove_node(g.inputs[0])           # an input
    new = build_node(g, get_op("scale"), [g.inputs[0]], {"factor": 3.0}, None)
    g.replace_all_uses(relu.id, new.id)
    assert add.inputs == (new.id, new.id)
    assert g.outputs == [add.id, new.id]
    assert g.users(relu.id) == []
    assert g.users(new.id) == [add.id]
    assert sorted(k for _, _, k in g.nx.in_edges(add.id, keys=True)) == [0, 1]
    g.remove_node(relu.id)
    assert relu.id not in g.nodes and relu.id not in g.nx
    graphc.verify(g)
    x = np.asarray(rng.standard_normal((4, 2)), np.float32)
    a, b = compile_traced(g)(x)
    assert rel_err(a, 6 * x) < TOL and rel_err(b, 3 * x) < TOL


def test_remove_node_drops_constant_value():
    g, (w1, _, _) = mlp()
    cid = next(i for i, v in g.constants.items() if v is w1)
    mm = g.users(cid)[0]
    other = g.add_constant(np.ones((4, 8), np.float32))
    g.set_inputs(mm, [g.nodes[mm].inputs[0], other.id])
    g.remove_node(cid)
    assert cid not in g.constants and cid not in g.nodes
    graphc.verify(g)


def test_topo_order_is_deterministic_and_valid():
    g, _ = mlp()
    order = g.topo_order()
    pos = {n: k for k, n in enumerate(order)}
    assert order == g.topo_order() == [n.id for n in g]
    for n in g.nodes.values():
        assert all(pos[i] < pos[n.id] for i in n.inputs)


def test_add_node_rejects_missing_operand():
    g, _ = mlp()
    with pytest.raises(KeyError):
        g.add_node("relu", [999], {}, TensorType((1,), "float32"))
