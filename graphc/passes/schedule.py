"""Scheduling: pick the order the (fused) nodes run in, to lower peak memory.

Candidate topological orders:

* ``lexicographic``: networkx's lexicographical topological sort by node id (the order
  the graph already has; kept on ties);
* ``dfs``: post-order of a depth-first walk from the outputs, operands in order (finish
  one operand's subtree before starting the next, so its temporaries die early);
* ``dfs_reversed``: the same walk, last operand first;
* ``greedy``: memory-aware list scheduling; among the ready nodes, run the one that frees
  the most bytes net of what it allocates (ties: earliest in the current order).

Each is scored by the most intermediate bytes live at once (``plan_memory``'s lower bound:
the same liveness, views and in-place reuse the memory planner uses) with every symbol
bound to ``REPRESENTATIVE_SIZE`` (128), and the best is kept. The order is made real by
renumbering node ids in scheduled order (inputs, then constants, then computing nodes), so
``graph.topo_order()`` returns it. ``graph.meta["schedule"]`` records ``order`` (computing
node ids, new numbering), ``peak_bytes``, ``chosen``, ``bindings`` and ``tried``
({order name: peak bytes}).
"""
from __future__ import annotations

import copy as _copy

import networkx as nx

from ..ir.graph import Graph
from .manager import note, register_pass
from .plan_memory import NOT_COMPUTING, liveness

REPRESENTATIVE_SIZE = 128


def representative_bindings(graph: Graph, size: int = REPRESENTATIVE_SIZE) -> dict[str, int]:
    syms: set[str] = set()
    for n in graph.nodes.values():
        syms |= n.type.symbols
    return {s: size for s in sorted(syms)}


def _computing(graph: Graph, n: int) -> bool:
    return graph.nodes[n].op not in NOT_COMPUTING


def order_lexicographic(graph: Graph) -> list[int]:
    return [n for n in nx.lexicographical_topological_sort(graph.nx) if _computing(graph, n)]


def order_dfs(graph: Graph, reverse_operands: bool = False) -> list[int]:
    """Post-order from the outputs (iterative, so deep graphs do not hit the recursion
    limit); nodes no output needs come last, in id order."""
    done: set[int] = set()
    out: list[int] = []
    roots = list(dict.fromkeys(graph.outputs)) + sorted(graph.nodes)
    for root in roots:
        if root in done:
            continue
        stack = [(root, False)]
        while stack:
            n, expanded = stack.pop()
            if n in done:
                continue
            if expanded:
                done.add(n)
                if _computing(graph, n):
                    out.append(n)
                continue
            stack.append((n, True))
            ins = [i for i in dict.fromkeys(graph.nodes[n].inputs) if i not in done]
            if not reverse_operands:
                ins.reverse()  # the stack pops the first operand first
            stack.extend((i, False) for i in ins)
    return out


def order_greedy(graph: Graph, bindings: dict[str, int]) -> list[int]:
    """Ready node that frees the most bytes (minus what it allocates) runs next."""
    base = order_lexicographic(graph)
    rank = {n: k for k, n in enumerate(base)}
    comp = set(base)
    outputs = set(graph.outputs)
    size = {n: graph.nodes[n].type.nbytes(bindings) for n in base}
    users = {n: set(graph.users(n)) & comp for n in base}
    remaining = {n: len(users[n]) for n in base}
    waiting = {n: len({i for i in graph.nodes[n].inputs if i in comp}) for n in base}
    ready = {n for n in base if waiting[n] == 0}
    out: list[int] = []
    while ready:
        def score(n):
            freed = sum(size[i] for i in set(graph.nodes[n].inputs)
                        if i in comp and i not in outputs and remaining[i] == 1)
            alloc = 0 if n in outputs else size[n]
            return (freed - alloc, -rank[n])
        n = max(ready, key=score)
        ready.remove(n)
        out.append(n)
        for i in set(graph.nodes[n].inputs):
            if i in comp:
                remaining[i] -= 1
        for u in users[n]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.add(u)
    return out


def renumber(graph: Graph, order: list[int]) -> tuple[Graph, dict[int, int]]:
    """A copy of ``graph`` whose ids follow ``order`` (computing nodes), after the inputs
    and constants. Returns the new graph and the old -> new id map."""
    new = Graph(graph.name)
    mapping: dict[int, int] = {}
    topo = graph.topo_order()
    head = list(graph.inputs) + [n for n in topo if graph.nodes[n].op == "constant"]
    head += [n for n in topo if graph.nodes[n].op == "input" and n not in graph.inputs]
    for old in head + list(order):
        node = graph.nodes[old]
        made = new.add_node(node.op, [mapping[i] for i in node.inputs], dict(node.attrs),
                            node.type, node.loc)
        made.meta = _copy.deepcopy(node.meta)
        mapping[old] = made.id
        if node.op == "constant":
            new.constants[made.id] = graph.constants[old]
    if len(mapping) != len(graph.nodes):
        missing = sorted(set(graph.nodes) - set(mapping))
        raise ValueError(f"schedule does not cover nodes {missing}")
    new.inputs = [mapping[i] for i in graph.inputs]
    new.outputs = [mapping[o] for o in graph.outputs]
    new.meta = {k: v for k, v in graph.meta.items() if k != "memory"}  # stale ids
    return new, mapping


@register_pass("schedule")
def schedule(graph: Graph) -> Graph:
    bindings = representative_bindings(graph)
    candidates = {
        "lexicographic": order_lexicographic(graph),
        "dfs": order_dfs(graph),
        "dfs_reversed": order_dfs(graph, reverse_operands=True),
        "greedy": order_greedy(graph, bindings),
    }
    tried = {name: liveness(graph, order).lower_bound(bindings)
             for name, order in candidates.items()}
    chosen = min(tried, key=lambda name: tried[name])  # first listed wins a tie
    new, mapping = renumber(graph, candidates[chosen])
    new.meta["schedule"] = {"order": [mapping[n] for n in candidates[chosen]],
                            "peak_bytes": tried[chosen], "chosen": chosen,
                            "bindings": bindings, "tried": tried}
    at = bindings or "static shapes"
    note("schedule", f"chose the {chosen} order: peak {tried[chosen]} bytes at {at} "
         f"(tried {', '.join(f'{k} {v}' for k, v in tried.items())})")
    return new
