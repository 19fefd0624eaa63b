"""Index and value expressions of a fusion group's body, in loop IR.

``Pull`` answers "what is node n at index idx?" by walking the body towards its inputs:
elementwise ops combine their operands (NumPy broadcasting becomes index zeroing),
movement ops remap the index (transpose permutes, reshape linearises and splits, slice
offsets, embedding reads an id), inputs become loads. Nothing here knows about a backend.
"""
from __future__ import annotations

import math

from ..errors import BackendError
from ..ir.dims import Sym
from . import loopir as L


def dim_expr(d) -> L.Expr:
    """A dim (int or symbolic polynomial) as an index expression over size symbols; an
    index expression (a loop extent) is returned as is."""
    if isinstance(d, L.Expr):
        return d
    if not isinstance(d, Sym):
        return L.c(int(d))
    total: L.Expr = L.c(0)
    for mono, coef in d.terms:
        term: L.Expr = L.c(coef)
        for s in mono:
            term = L.mul(term, L.Var(s))
        total = L.add(total, term)
    return total


def strides(shape) -> list[L.Expr]:
    out, acc = [], L.c(1)
    for d in reversed(shape):
        out.append(acc)
        acc = L.mul(acc, dim_expr(d))
    return list(reversed(out))


def linearize(idx, shape) -> L.Expr:
    total: L.Expr = L.c(0)
    for i, s in zip(idx, strides(shape)):
        total = L.add(total, L.mul(i, s))
    return total


def delinearize(lin: L.Expr, shape) -> list[L.Expr]:
    out = []
    for k, (d, s) in enumerate(zip(shape, strides(shape))):
        e = L.floordiv(lin, s)
        if k > 0:
            e = L.mod(e, dim_expr(d))
        out.append(e)
    return out


def reshape_index(idx, out_shape, in_shape) -> list[L.Expr]:
    """The input index of ``reshape(in_shape -> out_shape)`` at output index ``idx``.
    Leading and trailing dims both shapes share map directly; the middle is linearised."""
    n_out, n_in = len(out_shape), len(in_shape)
    lead = 0
    while lead < min(n_out, n_in) and out_shape[lead] == in_shape[lead]:
        lead += 1
    trail = 0
    while (trail < min(n_out, n_in) - lead
           and out_shape[n_out - 1 - trail] == in_shape[n_in - 1 - trail]):
        trail += 1
    mid_out = out_shape[lead:n_out - trail]
    mid_in = in_shape[lead:n_in - trail]
    mid_idx = list(idx[lead:n_out - trail])
    if mid_in:
        inner = delinearize(linearize(mid_idx, mid_out), mid_in) if mid_out else \
            [L.c(0)] * len(mid_in)
    else:
        inner = []
    return list(idx[:lead]) + inner + list(idx[n_out - trail:])


def broadcast_index(idx, out_shape, in_shape) -> list[L.Expr]:
    """Operand index for NumPy broadcasting of ``in_shape`` up to ``out_shape``."""
    r, p = len(out_shape), len(in_shape)
    out = []
    for k in range(p):
        d_in, d_out = in_shape[k], out_shape[r - p + k]
        out.append(L.c(0) if (d_in == 1 and d_out != 1) else idx[r - p + k])
    return out


_CALLS = {"exp", "log", "sqrt", "rsqrt", "tanh", "erf", "sigmoid", "neg"}
_BINS = {"add": "+", "sub": "-", "mul": "*", "maximum": "max", "minimum": "min",
         "less": "<", "greater": ">"}


def elementwise_value(node, args: list[L.Expr]) -> L.Expr:
    """Value of an elementwise node from its operands' values."""
    op, dt = node.op, node.type.dtype
    if op in _BINS:
        return L.Bin(_BINS[op], args[0], args[1])
    if op == "div":
        return L.Bin("//" if dt.startswith("int") else "/", args[0], args[1])
    if op in _CALLS:
        return L.Call(op, (args[0],))
    if op == "relu":
        return L.Bin("max", args[0], L.Const(0.0, dt))
    if op == "silu":
        return L.Bin("*", args[0], L.Call("sigmoid", (args[0],)))
    if op == "gelu":
        return L.Call("gelu" if node.attrs["approximate"] == "none" else "gelu_tanh",
                      (args[0],))
    if op == "scale":
        return L.Bin("*", args[0], L.Const(node.attrs["factor"], dt))
    if op == "cast":
        return L.Cast(args[0], node.attrs["dtype"])
    if op == "where":
        return L.Select(args[0], args[1], args[2])
    raise BackendError(f"no loop-IR lowering for elementwise op {op!r}", op=op,
                       node=node.name, loc=node.loc)


def activation_value(act: str, v: L.Expr, dtype: str) -> L.Expr:
    if act == "none":
        return v
    if act == "relu":
        return L.Bin("max", v, L.Const(0.0, dtype))
    if act == "silu":
        return L.Bin("*", v, L.Call("sigmoid", (v,)))
    if act in ("gelu", "gelu_tanh"):
        return L.Call(act, (v,))
    raise BackendError(f"unknown activation {act!r}")


class Pull:
    """Expressions for the nodes of one body graph. ``inputs`` maps body input node ids to
    buffer names; ``override`` maps node ids to a function idx -> Expr (a value computed
    elsewhere, e.g. an anchor's result); ``float64`` widens float math (the oracle)."""

    def __init__(self, body, inputs: dict[int, str], override=None):
        self.body = body
        self.inputs = inputs
        self.override = dict(override or {})

    def at(self, nid: int, idx) -> L.Expr:
        idx = list(idx)
        node = self.body.nodes[nid]
        if nid in self.override:
            return self.override[nid](idx)
        if nid in self.inputs:
            return L.Load(self.inputs[nid], tuple(idx))
        op = node.op
        if op == "constant":
            v = self.body.constants[nid]
            if v.size != 1:
                raise BackendError("a constant inside a fused body must be a scalar",
                                   node=node.name, loc=node.loc)
            value = node.attrs.get("value", v.reshape(()).item())
            return L.Const(value if not node.type.dtype.startswith("int") else int(value),
                           node.type.dtype)
        ins = [self.body.nodes[i] for i in node.inputs]
        if op == "transpose":
            axes = node.attrs["axes"]
            src = [None] * len(axes)
            for k, a in enumerate(axes):
                src[a] = idx[k]
            return self.at(node.inputs[0], src)
        if op == "reshape":
            return self.at(node.inputs[0], reshape_index(idx, node.type.shape,
                                                         ins[0].type.shape))
        if op == "slice":
            src = [L.add(dim_expr(s) if s else L.c(0), L.mul(i, L.c(st)))
                   for i, s, st in zip(idx, node.attrs["starts"], node.attrs["steps"])]
            return self.at(node.inputs[0], src)
        if op == "embedding":
            ri = ins[1].type.rank
            row = L.Cast(self.at(node.inputs[1], idx[:ri]), "int64")
            return self.at(node.inputs[0], [row] + idx[ri:])
        if op == "concat":
            axis = node.attrs["axis"]
            pieces = []
            offset: L.Expr = L.c(0)
            for i, t in zip(node.inputs, ins):
                sub = list(idx)
                sub[axis] = L.Bin("-", idx[axis], offset) if not (
                    isinstance(offset, L.Const) and offset.value == 0) else idx[axis]
                end = L.add(offset, dim_expr(t.type.shape[axis]))
                pieces.append((end, self.at(i, sub)))
                offset = end
            expr = pieces[-1][1]
            for end, value in reversed(pieces[:-1]):
                expr = L.Select(L.Bin("<", idx[axis], end), value, expr)
            return expr
        if op == "causal_mask":
            off = L.Bin("-", dim_expr(node.attrs["cols"]), dim_expr(node.attrs["rows"]))
            dt = node.type.dtype
            return L.Select(L.Bin(">", idx[1], L.add(idx[0], off)),
                            L.Const(-math.inf, dt), L.Const(0.0, dt))
        args = [self.at(i, broadcast_index(idx, node.type.shape, t.type.shape))
                for i, t in zip(node.inputs, ins)]
        return elementwise_value(node, args)
