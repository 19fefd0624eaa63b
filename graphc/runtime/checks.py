"""Checks of a call's symbol sizes that compiled code cannot make itself.

A graph traced with symbolic sizes (``S``) declares what each op computes for any
size: ``x[:5]`` is 5 rows, ``x[2:]`` is ``S - 2``. Some sizes make such a declaration
impossible: ``x[:5]`` of 2 rows, ``x[2:]`` of 1 row, causal attention with more queries
than keys, the max (min, argmax, argmin) over an axis of size 0, an arange with a
negative symbolic length. The reference backend would notice when NumPy's result has
another shape; a kernel would instead read past its input (whatever memory follows it)
or write NaN rows.
:func:`size_checks` lists one check per such op of a graph (fused bodies included);
``Executable.check_sizes`` runs them before any step (a compiled backend once per new set
of sizes, the reference every call), so every backend raises the same
:class:`~graphc.errors.InputError`, naming the op, its operands' shapes and the user's
line.
"""
from __future__ import annotations

from ..errors import InputError
from ..ir.dims import evaluate


def size_checks(graph) -> list:
    """``check(bindings)`` callables for the ops of ``graph`` whose validity depends on
    the symbol sizes."""
    checks = []
    for body, node in _nodes(graph):
        if node.op == "slice":
            check = _slice_check(body, node)
        elif node.op in ("max", "min", "argmax", "argmin"):
            check = _nonempty_check(body, node)
        elif node.op == "arange":
            check = _arange_check(node)
        elif node.op == "causal_mask":
            check = _rows_cols_check(
                node, node.attrs["rows"], node.attrs["cols"], True, False,
                "causal_mask(): {S} query rows but only {T} key columns", [node.type])
        elif node.op == "attention":
            operands = [body.nodes[i] for i in node.inputs]
            q, k = operands[:2]
            causal = node.attrs["causal"]
            check = _rows_cols_check(
                node, q.type.shape[-2], k.type.shape[-2], causal, True,
                "attention(): {S} " + ("causal " if causal else "")
                + "queries but {T} keys; every query must see at least one key",
                [o.type for o in operands])
        else:
            continue
        if check is not None:
            checks.append(check)
    return checks


def _nodes(graph):
    """(graph or fused body, node) for every node, fused bodies' nodes included."""
    for node in graph.nodes.values():
        if node.op == "fused":
            yield from _nodes(node.attrs["body"])
        else:
            yield graph, node


def _slice_check(body, node):
    """Along every axis whose bounds or size are symbolic: the declared number of
    elements is not negative, and when there are some, the first and the last one are
    inside the axis (then NumPy's slice of the input has exactly the declared shape: a
    stop past the end of a strided slice is fine when its last element is inside).
    Static ones were settled when the graph was traced."""
    x = body.nodes[node.inputs[0]].type
    a = node.attrs
    axes = [(k, s, e, st, d, n) for k, (s, e, st, d, n) in
            enumerate(zip(a["starts"], a["stops"], a["steps"], x.shape, node.type.shape))
            if not all(isinstance(v, int) for v in (s, e, d, n))]
    if not axes:
        return None

    def check(bindings):
        for axis, s, e, st, d, n in axes:
            s, e, d, n = (evaluate(v, bindings) for v in (s, e, d, n))
            if n < 0 or (n > 0 and not (0 <= s and s + (n - 1) * st < d)):
                what = f"{s}:{e}" + (f":{st}" if st != 1 else "")
                raise InputError(
                    f"slice(): elements {what} of axis {axis} ({max(n, 0)} declared) do not "
                    f"fit an axis of size {d} (sizes {dict(sorted(bindings.items()))})",
                    op="slice", node=node.name, shapes=[x], loc=node.loc)
    return check


def _nonempty_check(body, node):
    """max has no value over nothing (NumPy raises; a kernel would return its start
    value, -inf or an arbitrary integer): every reduced axis must have a size."""
    x = body.nodes[node.inputs[0]].type
    dims = [(a, x.shape[a]) for a in node.attrs["axis"] if not isinstance(x.shape[a], int)]
    if not dims:
        return None         # static sizes: a static empty axis is refused when traced

    def check(bindings):
        for axis, d in dims:
            if evaluate(d, bindings) == 0:
                raise InputError(f"{node.op}(): axis {axis} to reduce is empty for these "
                                 f"sizes ({dict(sorted(bindings.items()))}); the "
                                 f"{node.op} of nothing has no value", op=node.op,
                                 node=node.name, shapes=[x], loc=node.loc)
    return check


def _arange_check(node):
    """arange with symbolic bounds declares (stop - start) / step elements: not negative."""
    n = node.type.shape[0]
    if isinstance(n, int):
        return None

    def check(bindings):
        if evaluate(n, bindings) < 0:
            a = {k: evaluate(node.attrs[k], bindings) for k in ("start", "stop")}
            raise InputError(f"arange(): start {a['start']} and stop {a['stop']} (sizes "
                             f"{dict(sorted(bindings.items()))}) give a negative length "
                             f"{evaluate(n, bindings)} for step {node.attrs['step']}",
                             op="arange", node=node.name, loc=node.loc)
    return check


def _rows_cols_check(node, rows, cols, causal: bool, need_keys: bool, message: str,
                     shapes):
    if isinstance(rows, int) and isinstance(cols, int):
        return None  # checked when the graph was traced

    def check(bindings):
        S, T = evaluate(rows, bindings), evaluate(cols, bindings)
        if (need_keys and T == 0) or (causal and S > T):
            raise InputError(message.format(S=S, T=T), op=node.op, node=node.name,
                             shapes=shapes, loc=node.loc)
    return check
