"""Constant folding: a node whose operands are all constants (weights are constants) is
computed once at compile time with the reference implementation."""
from __future__ import annotations

from ..runtime.interpreter import resolve_attr
from ..ops.registry import get_op
from .manager import note, register_pass

# Folding never makes a constant bigger than this (e.g. a broadcast of a scalar to a
# huge shape is cheaper to compute than to store).
MAX_FOLD_ELEMENTS = 1 << 26
NEVER_FOLD = {"input", "constant"}


@register_pass("fold")
def fold(graph):
    folded = 0
    for nid in graph.topo_order():
        node = graph.nodes[nid]
        if node.op in NEVER_FOLD or not node.type.is_static:
            continue
        if any(graph.nodes[i].op != "constant" for i in node.inputs):
            continue
        if any(_symbolic(v) for v in node.attrs.values()):
            continue
        n = 1
        for d in node.type.shape:
            n *= d
        if n > MAX_FOLD_ELEMENTS:
            continue
        op = get_op(node.op)
        if op.extra.get("no_fold"):
            continue
        args = [graph.constants[i] for i in node.inputs]
        value = op.reference(*args, **{k: resolve_attr(v, {}) for k, v in node.attrs.items()})
        value = value.astype(node.type.np_dtype, copy=False)
        c = graph.add_constant(value, loc=node.loc)
        graph.replace_all_uses(nid, c.id)
        folded += 1
    if folded:
        note("fold", f"folded {folded} nodes into constants")
    return graph


def _symbolic(v) -> bool:
    from ..ir.dims import Sym
    if isinstance(v, Sym):
        return True
    if isinstance(v, (tuple, list)):
        return any(_symbolic(x) for x in v)
    return False
