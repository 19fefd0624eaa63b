"""Index and value expressions of a fusion group's body, in loop IR.

``Pull`` answers "what is node n at index idx?" by walking the body towards its inputs:
elementwise ops combine their operands (NumPy broadcasting becomes index zeroing),
movement ops remap the index (transpose permutes, reshape linearises and splits, slice
offsets, embedding reads an id), inputs become loads. What each op does is its own
declaration's ``lower=`` / ``lower_index=`` (graphc/ops); this module has the index
arithmetic they share. Nothing here knows about a backend.
"""
from __future__ import annotations

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


def _opdef(node):
    from ..ops.registry import get_op
    return get_op(node.op, loc=node.loc)


def elementwise_value(node, args: list[L.Expr]) -> L.Expr:
    """Value of an elementwise node from its operands' values: the op's ``lower=``."""
    op = _opdef(node)
    if op.lower is None:
        raise BackendError(f"op {node.op!r} has no loop-IR lowering (lower=)", op=node.op,
                           node=node.name, loc=node.loc)
    return op.lower(node, *args)


class _Act:
    """The node-like view an activation's op lowering reads (attrs and result dtype)."""

    def __init__(self, op: str, dtype: str, **attrs):
        from ..ir.types import TensorType
        self.op, self.attrs, self.type = op, attrs, TensorType((), dtype)
        self.name, self.loc = f"<{op} activation>", None


_ACTIVATIONS = {"relu": ("relu", {}), "silu": ("silu", {}),
                "gelu": ("gelu", {"approximate": "none"}),
                "gelu_tanh": ("gelu", {"approximate": "tanh"})}


def activation_value(act: str, v: L.Expr, dtype: str) -> L.Expr:
    """A gemm epilogue's activation, lowered by the activation op's own ``lower=``."""
    if act == "none":
        return v
    if act not in _ACTIVATIONS:
        raise BackendError(f"unknown activation {act!r}")
    op, attrs = _ACTIVATIONS[act]
    return elementwise_value(_Act(op, dtype, **attrs), [v])


class Operands:
    """What a ``lower_index`` reads: ``operands(k, idx)`` is operand k's value at
    ``idx``; ``operands.types[k]`` its type."""

    def __init__(self, pull: "Pull", node):
        self.pull, self.node = pull, node
        self.types = [pull.body.nodes[i].type for i in node.inputs]

    def __call__(self, k: int, idx) -> L.Expr:
        return self.pull.at(self.node.inputs[k], list(idx))


class Pull:
    """Expressions for the nodes of one body graph. ``inputs`` maps body input node ids to
    buffer names; ``override`` maps node ids to a function idx -> Expr (a value computed
    elsewhere, e.g. an anchor's result). Every op is lowered by its declaration: an
    elementwise op's ``lower=`` combines its operands' values at the broadcast index, a
    movement op's or generator's ``lower_index=`` says its value at an index in terms of
    its operands at other indices."""

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
        if node.op == "constant":
            v = self.body.constants[nid]
            if v.size != 1:
                raise BackendError("a constant inside a fused body must be a scalar",
                                   node=node.name, loc=node.loc)
            value = node.attrs.get("value", v.reshape(()).item())
            dt = node.type.dtype
            return L.Const(int(value) if dt.startswith("int") else
                           bool(value) if dt == "bool" else value, dt)
        op = _opdef(node)
        if op.lower_index is not None:
            return op.lower_index(node, idx, Operands(self, node))
        if op.lower is None:
            raise BackendError(f"op {node.op!r} ({op.kind}) has no loop-IR lowering",
                               op=node.op, node=node.name, loc=node.loc)
        ins = [self.body.nodes[i] for i in node.inputs]
        args = [self.at(i, broadcast_index(idx, node.type.shape, t.type.shape))
                for i, t in zip(node.inputs, ins)]
        return op.lower(node, *args)
