"""Decompose composite elementwise ops (gelu, silu) into primitives, so a backend only
needs to render primitive math. Reductions with a decomposition (softmax, layernorm,
rmsnorm) stay whole: backends lower them as fused templates."""
from __future__ import annotations

from ..ops.registry import get_op
from .manager import note, register_pass
from .rewrite import replace


def should_decompose(op) -> bool:
    return op.decompose is not None and op.kind == "elementwise"


@register_pass("decompose")
def decompose(graph):
    count = 0
    for nid in graph.topo_order():
        node = graph.nodes[nid]
        if node.op in ("input", "constant"):
            continue
        op = get_op(node.op)
        if not should_decompose(op):
            continue
        attrs = dict(node.attrs)
        replace(graph, nid, lambda b: op.decompose(*(b.wrap(i) for i in node.inputs), **attrs))
        count += 1
    if count:
        from .rewrite import remove_dead
        remove_dead(graph)
        note("decompose", f"decomposed {count} composite ops")
    return graph
