"""Algebraic simplification, repeated to a fixed point:

* identities: ``scale(x, 1)``, ``x * 1``, ``x + 0``, ``x - 0``, identity transpose/reshape;
* ``transpose(transpose(x))`` -> one transpose; ``reshape(reshape(x))`` -> one reshape;
* ``scale(scale(x, a), b)`` -> ``scale(x, a*b)``; ``x * c`` (c a scalar constant) ->
  ``scale(x, c)``;
* a constant scale folded into the constant weight it can reach through single-use
  reshapes, transposes, bias adds and matmuls: ``scale(q @ k^T, 1/sqrt(d))`` with
  ``q = (x @ W_Q + b_Q)`` viewed as heads becomes ``q' @ k^T`` with ``W_Q, b_Q`` scaled.
"""
from __future__ import annotations

import numpy as np

from .. import ops as F
from ..ir.graph import Graph
from .manager import note, register_pass
from .rewrite import const_value, is_const_scalar, replace, single_user


def _same_type(graph, a, b) -> bool:
    return graph.nodes[a].type == graph.nodes[b].type


def _identity(graph: Graph, node) -> int | None:
    """The operand this node just passes through, if it is an identity."""
    op, ins = node.op, node.inputs
    if op == "scale" and node.attrs["factor"] == 1.0:
        return ins[0]
    if op == "mul":
        for k in (0, 1):
            if is_const_scalar(graph, ins[1 - k], 1) and _same_type(graph, ins[k], node.id):
                return ins[k]
    if op == "add":
        for k in (0, 1):
            if is_const_scalar(graph, ins[1 - k], 0) and _same_type(graph, ins[k], node.id):
                return ins[k]
    if op == "sub" and is_const_scalar(graph, ins[1], 0) and _same_type(graph, ins[0], node.id):
        return ins[0]
    if op == "div" and is_const_scalar(graph, ins[1], 1) and _same_type(graph, ins[0], node.id):
        return ins[0]
    if op == "transpose" and node.attrs["axes"] == tuple(range(node.type.rank)):
        return ins[0]
    if op == "reshape" and _same_type(graph, ins[0], node.id):
        return ins[0]
    return None


def _scalar_of(graph, nid):
    if "value" in graph.nodes[nid].attrs:  # the exact literal the user wrote
        return graph.nodes[nid].attrs["value"]
    v = const_value(graph, nid)
    if v is not None and v.size == 1 and v.dtype.kind == "f":
        return float(v.reshape(()))
    return None


def _combine(graph: Graph, node) -> bool:
    """Merge a node with its producer; True if the graph changed."""
    g = graph.nodes
    if node.op == "transpose":
        inner = g[node.inputs[0]]
        if inner.op == "transpose":
            p1, p2 = inner.attrs["axes"], node.attrs["axes"]
            axes = tuple(p1[a] for a in p2)
            replace(graph, node.id, lambda b: F.transpose(b.wrap(inner.inputs[0]), axes=axes))
            return True
    if node.op == "reshape":
        inner = g[node.inputs[0]]
        if inner.op == "reshape":
            shape = node.attrs["shape"]
            replace(graph, node.id, lambda b: F.reshape(b.wrap(inner.inputs[0]), shape=shape))
            return True
    if node.op == "scale":
        inner = g[node.inputs[0]]
        if inner.op == "scale":
            f = inner.attrs["factor"] * node.attrs["factor"]
            replace(graph, node.id, lambda b: F.scale(b.wrap(inner.inputs[0]), f))
            return True
        if _fold_scale_into_weight(graph, node):
            return True
    if node.op == "mul":
        for k in (0, 1):
            s = _scalar_of(graph, node.inputs[1 - k])
            x = node.inputs[k]
            if s is not None and _same_type(graph, x, node.id):
                replace(graph, node.id, lambda b: F.scale(b.wrap(x), s))
                return True
    return False


def _weight_path(graph: Graph, nid: int, path: list) -> bool:
    """Find single-use nodes from ``nid`` back to a constant matmul weight through
    reshape / transpose / add(x, const) / matmul; append (node, operand index to scale)
    steps to ``path``. The scale then moves onto constants: every bias on the way and the
    weight at the end."""
    node = graph.nodes[nid]
    if not single_user(graph, nid):
        return False
    if node.op in ("reshape", "transpose"):
        return _weight_path(graph, node.inputs[0], path)
    if node.op == "add":
        for k in (0, 1):
            if const_value(graph, node.inputs[1 - k]) is not None:
                path.append((nid, 1 - k))
                if _weight_path(graph, node.inputs[k], path):
                    return True
                path.pop()
        return False
    if node.op == "matmul":
        for k in (1, 0):
            if const_value(graph, node.inputs[k]) is not None:
                path.append((nid, k))
                return True
        for k in (0, 1):
            mark = len(path)
            if _weight_path(graph, node.inputs[k], path):
                return True
            del path[mark:]
    return False


def _fold_scale_into_weight(graph: Graph, node) -> bool:
    path: list = []
    if not _weight_path(graph, node.inputs[0], path):
        return False
    s = node.attrs["factor"]
    scaled: dict[int, int] = {}
    for nid, k in path:
        cid = graph.nodes[nid].inputs[k]
        if cid not in scaled:
            v = graph.constants[cid]
            new = (v.astype(np.float64) * s).astype(v.dtype)
            scaled[cid] = graph.add_constant(new, loc=graph.nodes[cid].loc,
                                             name=graph.nodes[cid].attrs.get("name")).id
        ins = list(graph.nodes[nid].inputs)
        ins[k] = scaled[cid]
        graph.set_inputs(nid, ins)
    graph.replace_all_uses(node.id, node.inputs[0])
    note("fold_scale", f"scale {s:g} at {node.name} folded into constant weight "
         f"%{path[-1][0]} (and {len(path) - 1} bias adds)", node=node.name)
    return True


@register_pass("simplify")
def simplify(graph: Graph) -> Graph:
    changed, rounds = True, 0
    while changed and rounds < 100:
        changed = False
        rounds += 1
        for nid in graph.topo_order():
            node = graph.nodes.get(nid)
            if node is None or node.op in ("input", "constant"):
                continue
            same = _identity(graph, node)
            if same is not None:
                graph.replace_all_uses(nid, same)
                changed = True
            elif _combine(graph, node):
                changed = True
        from .rewrite import remove_dead
        remove_dead(graph)
    return graph
