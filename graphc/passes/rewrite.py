"""Helpers passes share for editing a graph in place."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..frontend.tracer import Builder, building
from ..ir.graph import Graph


def replace(graph: Graph, node_id: int, build: Callable) -> int:
    """Replace node ``node_id`` by what ``build(builder)`` returns (a Tensor made with
    the frontend functions, or an existing node id). New nodes carry the replaced node's
    source line. Returns the id now used in its place. The old node is left for dce."""
    node = graph.nodes[node_id]
    b = Builder(graph, loc=node.loc)
    with building(b):
        out = build(b)
    new_id = out if isinstance(out, int) else out.id
    if graph.nodes[new_id].type != node.type:
        raise AssertionError(f"rewrite of {node.name} ({node.op}) changed its type from "
                             f"{node.type} to {graph.nodes[new_id].type}")
    graph.replace_all_uses(node_id, new_id)
    return new_id


def const_value(graph: Graph, node_id: int) -> np.ndarray | None:
    """The value of a constant node, else None."""
    return graph.constants.get(node_id) if graph.nodes[node_id].op == "constant" else None


def is_const_scalar(graph: Graph, node_id: int, value: float) -> bool:
    """A constant whose every element equals ``value``."""
    v = const_value(graph, node_id)
    return v is not None and v.size > 0 and bool(np.all(v == value))


def single_user(graph: Graph, node_id: int) -> bool:
    """Used by exactly one consumer (once) and not a graph output."""
    return (len(list(graph.nx.out_edges(node_id))) == 1 and node_id not in graph.outputs)


def remove_dead(graph: Graph) -> int:
    """Delete nodes that no output depends on (inputs are kept). Returns how many."""
    import networkx as nx
    live = set(graph.outputs) | set(graph.inputs)
    for o in graph.outputs:
        live |= nx.ancestors(graph.nx, o)
    dead = [n for n in reversed(graph.topo_order()) if n not in live]
    for n in dead:
        graph.remove_node(n)
    return len(dead)
