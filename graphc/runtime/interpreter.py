"""Run a Graph node by node with the ops' NumPy reference implementations.

This is the oracle every backend and pass is checked against. ``float64=True`` computes
every float tensor in float64 whatever the graph declares.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import BackendError, GraphcError, InputError
from ..ir.dims import Sym, evaluate
from ..ops.registry import get_op, wrap_error
from .memory import last_uses


def resolve_attr(v, bindings: Mapping[str, int]):
    """Replace symbolic dims inside an attribute value by their sizes."""
    if isinstance(v, Sym):
        return evaluate(v, bindings)
    if isinstance(v, tuple):
        return tuple(resolve_attr(x, bindings) for x in v)
    if isinstance(v, list):
        return [resolve_attr(x, bindings) for x in v]
    return v


def _widen(dtype: str, float64: bool) -> str:
    return "float64" if float64 and dtype == "float32" else dtype


def run_graph(graph, arrays: Sequence[np.ndarray], bindings: Mapping[str, int] | None = None,
              float64: bool = False, timer=None) -> list[np.ndarray]:
    """Evaluate ``graph`` on ``arrays`` (already checked against the input specs);
    ``timer`` (graphc.runtime.profile.StepTimer) times every op node."""
    if bindings is None:
        from .signature import bind_inputs
        bindings = bind_inputs(graph, arrays)
    order = graph.topo_order()
    # Free each value after its last consumer runs.
    last_use = last_uses(graph, order)
    keep = set(graph.outputs)
    values: dict[int, np.ndarray] = {}
    feeds = dict(zip(graph.inputs, arrays))
    for pos, nid in enumerate(order):
        node = graph.nodes[nid]
        want = _widen(node.type.dtype, float64)
        if node.op == "input":
            out = np.asarray(feeds[nid])
            out = out.astype(want, copy=False)
        elif node.op == "constant":
            if float64 and "value" in node.attrs:  # an exact Python literal
                out = np.asarray(node.attrs["value"], dtype=want)
            else:
                out = graph.constants[nid].astype(want, copy=False)
        else:
            if timer is not None:
                t0 = timer.start()
            op = get_op(node.op, node.loc)
            attrs = {k: resolve_attr(v, bindings) for k, v in node.attrs.items()}
            if float64 and "dtype" in attrs:
                attrs["dtype"] = _widen(attrs["dtype"], True)
            try:
                args = [values[i] for i in node.inputs]
                if op.extra.get("run_with_context"):
                    # Ops holding a subgraph (fusion groups) run it with this call's
                    # symbol sizes and precision.
                    attrs.update(_bindings=bindings, _float64=float64)
                out = np.asarray(op.reference(*args, **attrs))
            except MemoryError:
                from .memory import fmt_bytes
                size = int(np.prod(node.type.concrete_shape(bindings), dtype=np.float64)
                           * np.dtype(want).itemsize)
                raise InputError(
                    f"out of memory computing {node.op} : {node.type} = "
                    f"{list(node.type.concrete_shape(bindings))} ({fmt_bytes(size)}, "
                    f"{size:,} bytes) at sizes {dict(sorted(bindings.items()))}; use "
                    "smaller sizes", op=node.op, node=node.name,
                    shapes=[graph.nodes[i].type for i in node.inputs], loc=node.loc) from None
            except GraphcError as e:
                if e.loc is not None:
                    raise
                raise wrap_error(e, op=node.op, node=node.name,
                                 shapes=[graph.nodes[i].type for i in node.inputs],
                                 loc=node.loc) from None
            expect = node.type.concrete_shape(bindings)
            if out.shape != expect:
                raise InputError(
                    f"{node.op} produced shape {out.shape} but the graph declares "
                    f"{node.type} = {expect} for these inputs (sizes {dict(bindings)}); an "
                    "input size is outside what this op allows (e.g. a slice past the end)",
                    op=node.op, node=node.name, loc=node.loc)
            if out.dtype != np.dtype(want):
                raise BackendError(f"reference of op {node.op} returned {out.dtype}, "
                                   f"expected {want}: a bug in the op's definition",
                                   op=node.op, node=node.name, loc=node.loc)
            if timer is not None:
                timer.stop(nid, t0)
        values[nid] = out
        for i in node.inputs:
            if last_use.get(i) == pos and i not in keep:
                values.pop(i, None)
    return [values[o] for o in graph.outputs]
