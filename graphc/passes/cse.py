"""Common subexpression elimination: nodes with the same op, operands and attributes
become one. Small constants with equal values merge too (large weights merge only when
they are the same array, to keep the pass cheap)."""
from __future__ import annotations

import hashlib

import numpy as np

from ..ir.graph import Graph
from .manager import note, register_pass

SMALL_CONSTANT = 4096  # elements


def _hashable(v):
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, hashlib.sha1(v.tobytes()).hexdigest())
    if isinstance(v, Graph):
        return ("graph", id(v))
    return v


def _key(graph: Graph, node):
    if node.op == "input":
        return None
    if node.op == "constant":
        v = graph.constants[node.id]
        if v.size <= SMALL_CONSTANT:
            return ("constant", v.dtype.str, v.shape, v.tobytes())
        return ("constant-object", id(v))
    return (node.op, node.inputs, _hashable(node.attrs), node.type)


@register_pass("cse")
def cse(graph: Graph) -> Graph:
    seen: dict = {}
    merged = 0
    for nid in graph.topo_order():
        node = graph.nodes[nid]
        key = _key(graph, node)
        if key is None:
            continue
        rep = seen.get(key)
        if rep is None:
            seen[key] = nid
        else:
            graph.replace_all_uses(nid, rep)
            merged += 1
    if merged:
        note("cse", f"merged {merged} duplicate nodes")
    return graph
