"""Loop-IR kernels for fusion groups: elementwise groups (pull every output element
through the body), reduction groups (a parallel loop over rows, row statistics, then the
epilogue) and the epilogues of GEMM / attention templates.

An epilogue is normally carried forward from the anchor's value at one index to one store
("pointwise"). One that needs the anchor at two indices (``y + y.T``) or at an index of
another rank (``y + r`` with r ``[1, S, N]`` for y ``[S, N]``) raises
:class:`NotPointwise`; lowering then stores the anchor into a buffer ``acc`` and pulls the
epilogue from it (:func:`pull_epilogue_kernel`)."""
from __future__ import annotations

import networkx as nx

from ..errors import BackendError
from ..ops.registry import get_op
from ..ir.dims import prod
from . import loopir as L
from .exprs import Pull, activation_value, broadcast_index, dim_expr, elementwise_value, \
    reshape_index

ACC = "float64"   # row statistics accumulate in float64


def identity(op: str, dtype: str):
    """The start value of a ``+``, ``max`` or ``min`` accumulator of ``dtype`` (the
    lowest / highest integer of the dtype for an integer max / min: a max over an empty
    axis never runs, runtime/checks.py). The CUDA renderer checks its block reductions
    against it."""
    if op == "+":
        return 0 if dtype.startswith("int") else 0.0
    if dtype == "bool":
        return op == "min"
    if dtype.startswith("int"):
        bits = 63 if dtype == "int64" else 31
        return -2**bits if op == "max" else 2**bits - 1
    return float("-inf") if op == "max" else float("inf")


def loop_nest(shape, make_body, prefix: str, parallel: bool = True,
              collapse_all: bool = False) -> list:
    """Loops over ``shape``: all but the last dim collapse into one parallel loop and the
    last stays an inner sequential loop (it vectorises); ``collapse_all`` makes every dim
    part of the parallel loop (reductions, whose inner loops are the reduced axes)."""
    r = len(shape)
    if r == 0:
        return make_body([])
    names = [f"{prefix}{k}" for k in range(r)]
    idx = [L.Var(n) for n in names]
    if r == 1:
        return [L.Loop(names[0], dim_expr(shape[0]), make_body(idx), parallel)]
    if collapse_all:
        from .exprs import delinearize
        flat = f"{prefix}p"
        decode = [L.Assign(n, e, "int64") for n, e in zip(names, delinearize(L.Var(flat),
                                                                              shape))]
        return [L.Loop(flat, dim_expr(prod(shape)), decode + make_body(idx), parallel)]
    inner = [L.Loop(names[-1], dim_expr(shape[-1]), make_body(idx), False)]
    if r == 2:
        return [L.Loop(names[0], dim_expr(shape[0]), inner, parallel)]
    flat = f"{prefix}p"
    outer = shape[:-1]
    decode = []
    from .exprs import delinearize
    for n, e in zip(names[:-1], delinearize(L.Var(flat), outer)):
        decode.append(L.Assign(n, e, "int64"))
    return [L.Loop(flat, dim_expr(prod(outer)), decode + inner, parallel)]


def _symbols_of(stmts) -> list[str]:
    names = set()
    bound = set()
    for n in L.walk(stmts):
        if isinstance(n, L.Loop):
            bound.add(n.var)
        elif isinstance(n, L.Assign):
            bound.add(n.var)
        elif isinstance(n, L.Var):
            names.add(n.name)
    return sorted(names - bound)


class NotPointwise(BackendError):
    """The epilogue needs the anchor's value at another index than the one it stores."""


def make_kernel(name: str, body, inputs: dict[int, str], stmts, extra_bufs=(),
                out: bool = True) -> L.Kernel:
    """A kernel over ``stmts``; its buffer parameters are the body inputs it reads (named
    ``in<k>`` for operand k of the group), ``out`` (unless ``out`` is false), and
    ``extra_bufs``."""
    used = {n.buf for n in L.walk(stmts) if isinstance(n, (L.Load, L.Store))}
    bufs = [L.BufferParam(b, body.nodes[i].type.dtype, body.nodes[i].type.rank)
            for i, b in inputs.items() if b in used]
    if out:
        o = body.nodes[body.outputs[0]]
        bufs.append(L.BufferParam("out", o.type.dtype, o.type.rank, "out"))
    bufs += list(extra_bufs)
    return L.Kernel(name, bufs, _symbols_of(stmts), stmts)


def body_inputs(body) -> dict[int, str]:
    return {nid: f"in{k}" for k, nid in enumerate(body.inputs)}


# -- elementwise groups ----------------------------------------------------------------

def elementwise_kernel(body, name: str) -> L.Kernel:
    pull = Pull(body, body_inputs(body))
    out = body.nodes[body.outputs[0]]

    def store(idx):
        return [L.Store("out", tuple(idx), L.Cast(pull.at(out.id, idx), out.type.dtype))]
    return make_kernel(name, body, pull.inputs, loop_nest(out.type.shape, store, "i"))


# -- epilogues (shared by reductions and templates) -------------------------------------

def epilogue(body, anchor: int, idx, value: L.Expr, pull: Pull, tmp_prefix="e") -> list:
    """Statements that carry the anchor's value at ``idx`` through the in-group nodes
    after it and store the group's output (movement ops remap the store index)."""
    chain = [n for n in nx.topological_sort(body.nx) if n in nx.descendants(body.nx, anchor)]
    dt = body.nodes[anchor].type.dtype
    stmts = [L.Assign(f"{tmp_prefix}{anchor}", value, dt)]
    at = {anchor: (list(idx), L.Var(f"{tmp_prefix}{anchor}"))}
    in_chain = set(chain) | {anchor}

    def refuse(i):
        raise BackendError("a side input of an epilogue depends on the anchor",
                           node=body.nodes[i].name)
    pull = Pull(body, pull.inputs, {**pull.override,
                                    **{n: (lambda idx, n=n: refuse(n)) for n in in_chain}})
    for nid in chain:
        node = body.nodes[nid]
        ins = [body.nodes[i] for i in node.inputs]
        chained = [i for i in node.inputs if i in at]
        src_idx = at[chained[0]][0]
        if node.op == "transpose":
            new_idx = [src_idx[a] for a in node.attrs["axes"]]
            at[nid] = (new_idx, at[chained[0]][1])
            continue
        if node.op == "reshape":
            new_idx = reshape_index(src_idx, ins[0].type.shape, node.type.shape)
            at[nid] = (new_idx, at[chained[0]][1])
            continue
        if node.op != "fused" and get_op(node.op).lower is None:
            # another movement op or a generator: the store cannot follow the anchor's
            # index forward; lowering pulls the epilogue from the anchor's buffer instead
            raise NotPointwise(f"epilogue op {node.op} is not pointwise", op=node.op,
                               node=node.name, loc=node.loc)
        for i in chained:
            if body.nodes[i].type.shape != node.type.shape or at[i][0] != src_idx:
                raise NotPointwise(f"epilogue op {node.op} combines anchor values at "
                                   "different indices", op=node.op, node=node.name,
                                   loc=node.loc)
        args = [at[i][1] if i in at else
                pull.at(i, broadcast_index(src_idx, node.type.shape, t.type.shape))
                for i, t in zip(node.inputs, ins)]
        var = f"{tmp_prefix}{nid}"
        stmts.append(L.Assign(var, elementwise_value(node, args), node.type.dtype))
        at[nid] = (src_idx, L.Var(var))
    out = body.outputs[0]
    out_idx, out_val = at[out]
    stmts.append(L.Store("out", tuple(out_idx), L.Cast(out_val, body.nodes[out].type.dtype)))
    return stmts


def anchor_of(body) -> int:
    from ..passes.fuse import ANCHOR_ROLES, role
    anchors = [n for n in body.nodes.values()
               if n.op not in ("input", "constant") and role(n) in ANCHOR_ROLES]
    if len(anchors) != 1:
        raise BackendError(f"fusion group {body.name} has {len(anchors)} anchors")
    return anchors[0].id


# -- reduction groups ------------------------------------------------------------------

class RowContext:
    """What a reduction op's ``lower_row(ctx)`` builds one row's statements from.

    The anchor (``node``) reduces its first operand ``x`` over ``axes`` (its ``axis``
    attribute: an int or a tuple; the last axis when it has none); ``row_idx`` indexes
    the other axes. ``value(k, idx)`` is operand k at a full index of ``x`` (broadcast to
    operand k's shape), ``param(k, idx)`` a per-last-axis parameter, ``loops(prefix,
    make)`` the loops over the reduced axes around ``make(red_idx)``, ``full(red_idx)``
    the full index of a row element, ``finish(idx, value)`` the statements that carry the
    anchor's value at ``idx`` through the group's epilogue and store it. Statistics
    accumulate in ``ACC`` (float64); ``L.Reduce`` is the reduction step a renderer may
    split across threads.
    """

    ACC = ACC

    def __init__(self, body, anchor, pull, row_idx, finish):
        self.body, self.node, self.pull = body, anchor, pull
        self.x = body.nodes[anchor.inputs[0]]
        self.shape = self.x.type.shape
        axis = anchor.attrs.get("axis", len(self.shape) - 1)
        self.axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
        self.rows = [k for k in range(len(self.shape)) if k not in self.axes]
        self.row_idx = list(row_idx)
        self.red_shape = [self.shape[k] for k in self.axes]
        self.n_red = dim_expr(prod(self.red_shape))
        self.dtype = anchor.type.dtype
        self._finish = finish

    def full(self, red_idx) -> list:
        idx = [None] * len(self.shape)
        for k, v in zip(self.rows, self.row_idx):
            idx[k] = v
        for k, v in zip(self.axes, red_idx):
            idx[k] = v
        return idx

    def value(self, k: int, idx, dtype: str | None = ACC) -> L.Expr:
        nid = self.node.inputs[k]
        v = self.pull.at(nid, broadcast_index(idx, self.shape, self.body.nodes[nid].type.shape))
        return v if dtype is None else L.Cast(v, dtype)

    def param(self, k: int, idx) -> L.Expr:
        return L.Cast(self.pull.at(self.node.inputs[k], [idx[-1]]), ACC)

    def loops(self, prefix: str, make) -> list:
        names = [f"{prefix}{k}" for k in range(len(self.axes))]
        stmts = make([L.Var(n) for n in names])
        for n, d in reversed(list(zip(names, self.red_shape))):
            stmts = [L.Loop(n, dim_expr(d), stmts, False)]
        return stmts

    def reduce(self, var: str, op: str, dtype: str, make_value) -> list:
        """``var`` = the ``op`` reduction of ``make_value(full index)`` over the row."""
        init = L.Const(identity(op, dtype), dtype)
        return [L.Assign(var, init, dtype),
                *self.loops("j", lambda j: [L.Reduce(var, op, make_value(self.full(j)))])]

    def finish(self, idx, value: L.Expr) -> list:
        return self._finish(idx, value)

    def out_index(self) -> list:
        """The index of the row's one result (keepdims keeps the reduced axes as 0)."""
        if self.node.attrs.get("keepdims"):
            return self.full([L.c(0)] * len(self.axes))
        return list(self.row_idx)

    def write_row(self, value_at) -> list:
        """Store ``value_at(full index)`` for every element of the row (a normalisation)."""
        return self.loops("o", lambda j: self.finish(self.full(j), L.Cast(
            value_at(self.full(j)), self.dtype)))


def reduction_kernel(body, name: str, store_anchor: bool = False) -> L.Kernel:
    """The group's kernel: a parallel loop over the rows of the anchor's reduction, each
    row the statements of the anchor op's ``lower_row``; with ``store_anchor`` only the
    anchor's value, stored into ``acc`` (for :func:`pull_epilogue_kernel` to finish the
    group)."""
    a = body.nodes[anchor_of(body)]
    op = get_op(a.op, loc=a.loc)
    if op.lower_row is None:
        raise BackendError(f"no reduction lowering (lower_row=) for {a.op}", op=a.op,
                           node=a.name, loc=a.loc)
    pull = Pull(body, body_inputs(body))

    def finish(idx, value):  # the anchor's value at idx: through the epilogue, or stored
        if store_anchor:
            return [L.Store("acc", tuple(idx), value)]
        return epilogue(body, a.id, idx, value, pull)

    probe = RowContext(body, a, pull, [], finish)
    row_shape = [probe.shape[k] for k in probe.rows]
    stmts = loop_nest(row_shape, lambda r: op.lower_row(RowContext(body, a, pull, r, finish)),
                      "r", collapse_all=True)
    if store_anchor:
        acc = L.BufferParam("acc", a.type.dtype, a.type.rank, "out")
        return make_kernel(name, body, pull.inputs, stmts, [acc], out=False)
    return make_kernel(name, body, pull.inputs, stmts)


# -- template epilogues ----------------------------------------------------------------

def template_epilogue_kernel(body, name: str, anchor: int, value_at) -> L.Kernel:
    """Kernel over the anchor's index space: value_at(idx) gives the anchor's value
    (read from the template's accumulator buffer ``acc``), then the epilogue stores."""
    pull = Pull(body, body_inputs(body))
    a = body.nodes[anchor]

    def make(idx):
        return epilogue(body, anchor, idx, value_at(idx, pull), pull)
    acc = L.BufferParam("acc", a.type.dtype, a.type.rank, "in")
    return make_kernel(name, body, pull.inputs, loop_nest(a.type.shape, make, "i"), [acc])


def pull_epilogue_kernel(body, name: str, anchor: int, value_at) -> L.Kernel:
    """Kernel over the group's output shape that pulls every element through the epilogue,
    with the anchor read at any index by value_at(idx, pull) (from the buffer ``acc``): for
    epilogues that are not pointwise. ``acc`` must not be the output buffer."""
    pull = Pull(body, body_inputs(body))
    pull.override[anchor] = lambda idx: value_at(idx, pull)
    out = body.nodes[body.outputs[0]]
    a = body.nodes[anchor]

    def store(idx):
        return [L.Store("out", tuple(idx), L.Cast(pull.at(out.id, idx), out.type.dtype))]
    acc = L.BufferParam("acc", a.type.dtype, a.type.rank, "in")
    return make_kernel(name, body, pull.inputs, loop_nest(out.type.shape, store, "i"), [acc])


def load_acc(idx, pull) -> L.Expr:
    """value_at for an anchor whose value is already in ``acc``."""
    return L.Load("acc", tuple(idx))


def pointwise_store(body, anchor: int) -> bool:
    """The epilogue stores the anchor's element at the same place in memory it was
    computed at (no transpose after the anchor; reshapes keep the row-major order):
    safe in place, the output buffer read in the anchor's shape."""
    desc = nx.descendants(body.nx, anchor)
    return not any(body.nodes[n].op == "transpose" for n in desc)


def gemm_value(body, anchor: int):
    """Anchor value of a matmul / gemm: acc (+ bias, activation)."""
    a = body.nodes[anchor]

    def value_at(idx, pull):
        v = L.Load("acc", tuple(idx))
        if a.op == "gemm":
            b = body.nodes[a.inputs[2]]
            v = L.Bin("+", v, pull.at(b.id, broadcast_index(idx, a.type.shape, b.type.shape)))
            v = activation_value(a.attrs["activation"], v, a.type.dtype)
        return v
    return value_at
