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
from ..ir.dims import prod
from . import loopir as L
from .exprs import Pull, activation_value, broadcast_index, dim_expr, elementwise_value, \
    reshape_index

NORMS = ("softmax", "layernorm", "rmsnorm", "add_layernorm")
REDUCES = ("sum", "mean", "max")
ACC = "float64"   # row statistics accumulate in float64


def identity(op: str, dtype: str):
    """The start value of a ``+`` or ``max`` accumulator of ``dtype`` (the lowest
    integer of the dtype for an integer max: a max over an empty axis never runs,
    runtime/checks.py). The CUDA renderer checks its block reductions against it."""
    if op == "+":
        return 0 if dtype.startswith("int") else 0.0
    if dtype.startswith("int"):
        return -2**63 if dtype == "int64" else -2**31
    return float("-inf")


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

def reduction_kernel(body, name: str, store_anchor: bool = False) -> L.Kernel:
    """The group's kernel; with ``store_anchor`` only the anchor's value, stored into
    ``acc`` (for :func:`pull_epilogue_kernel` to finish the group)."""
    a = body.nodes[anchor_of(body)]
    pull = Pull(body, body_inputs(body))
    x = body.nodes[a.inputs[0]]
    shape = x.type.shape
    if a.op in REDUCES:
        axes = a.attrs["axis"]
    elif a.op == "softmax":
        axes = (a.attrs["axis"],)
    elif a.op in NORMS:
        axes = (len(shape) - 1,)
    else:
        raise BackendError(f"no reduction lowering for {a.op}", op=a.op, node=a.name,
                           loc=a.loc)
    rows = [k for k in range(len(shape)) if k not in axes]

    def finish(idx, value):  # the anchor's value at idx: through the epilogue, or stored
        if store_anchor:
            return [L.Store("acc", tuple(idx), value)]
        return epilogue(body, a.id, idx, value, pull)
    red_shape = [shape[k] for k in axes]
    n_red = dim_expr(prod(red_shape))
    dt = a.type.dtype

    def full_index(row_idx, red_idx):
        idx = [None] * len(shape)
        for k, v in zip(rows, row_idx):
            idx[k] = v
        for k, v in zip(axes, red_idx):
            idx[k] = v
        return idx

    def red_loops(prefix, make):
        names = [f"{prefix}{k}" for k in range(len(axes))]
        idx = [L.Var(n) for n in names]
        stmts = make(idx)
        for n, d in reversed(list(zip(names, red_shape))):
            stmts = [L.Loop(n, dim_expr(d), stmts, False)]
        return stmts

    def X(idx, acc=ACC):
        v = pull.at(x.id, idx)
        if a.op == "add_layernorm":
            r = body.nodes[a.inputs[1]]
            v = L.Bin("+", v, pull.at(r.id, broadcast_index(idx, shape, r.type.shape)))
        return L.Cast(v, acc)

    def param(k, idx):  # weight / bias over the last axis
        return L.Cast(pull.at(a.inputs[k], [idx[-1]]), ACC)

    def per_row(row_idx):
        s: list = []
        if a.op in REDUCES:
            # integers sum and compare in int64 (a float64 total rounds past 2**53; an
            # int32 result wraps as NumPy's int32 sum does)
            whole = x.type.dtype.startswith("int") and a.op != "mean"
            acc = "int64" if whole else ACC
            comb = "max" if a.op == "max" else "+"
            init = L.Const(identity(comb, acc), acc)
            # the running value is "total", not "acc" (the anchor buffer's name)
            s.append(L.Assign("total", init, acc))
            s += red_loops("j", lambda j: [L.Assign("total", L.Bin(comb, L.Var("total"),
                                                                   X(full_index(row_idx, j),
                                                                     acc)),
                                                    acc)])
            val = L.Var("total")
            if a.op == "mean":
                val = L.Bin("/", val, L.Cast(n_red, ACC))
            out_idx = list(row_idx)
            if a.attrs["keepdims"]:
                out_idx = full_index(row_idx, [L.c(0)] * len(axes))
            return s + finish(out_idx, L.Cast(val, dt))
        if a.op == "softmax":
            s.append(L.Assign("m", L.Const(float("-inf"), ACC), ACC))
            s += red_loops("j", lambda j: [L.Assign("m", L.Bin("max", L.Var("m"),
                                                               X(full_index(row_idx, j))),
                                                    ACC)])
            s.append(L.Assign("ssum", L.Const(0.0, ACC), ACC))
            s += red_loops("j", lambda j: [L.Assign("ssum", L.Bin(
                "+", L.Var("ssum"), L.Call("exp", (L.Bin("-", X(full_index(row_idx, j)),
                                                         L.Var("m")),))), ACC)])
            s.append(L.Assign("inv", L.Bin("/", L.Const(1.0, ACC), L.Var("ssum")), ACC))

            def value(idx):
                return L.Bin("*", L.Call("exp", (L.Bin("-", X(idx), L.Var("m")),)),
                             L.Var("inv"))
        else:
            s.append(L.Assign("ssum", L.Const(0.0, ACC), ACC))
            if a.op == "rmsnorm":
                s += red_loops("j", lambda j: [L.Assign("ssum", L.Bin(
                    "+", L.Var("ssum"), L.Bin("*", X(full_index(row_idx, j)),
                                              X(full_index(row_idx, j)))), ACC)])
                s.append(L.Assign("rstd", L.Call("rsqrt", (L.Bin(
                    "+", L.Bin("/", L.Var("ssum"), L.Cast(n_red, ACC)),
                    L.Const(a.attrs["eps"], ACC)),)), ACC))

                def value(idx):
                    return L.Bin("*", L.Bin("*", X(idx), L.Var("rstd")), param(1, idx))
            else:
                s += red_loops("j", lambda j: [L.Assign("ssum", L.Bin(
                    "+", L.Var("ssum"), X(full_index(row_idx, j))), ACC)])
                s.append(L.Assign("mu", L.Bin("/", L.Var("ssum"), L.Cast(n_red, ACC)), ACC))
                s.append(L.Assign("vsum", L.Const(0.0, ACC), ACC))

                def centred(idx):
                    return L.Bin("-", X(idx), L.Var("mu"))
                s += red_loops("j", lambda j: [L.Assign("vsum", L.Bin(
                    "+", L.Var("vsum"), L.Bin("*", centred(full_index(row_idx, j)),
                                              centred(full_index(row_idx, j)))), ACC)])
                s.append(L.Assign("rstd", L.Call("rsqrt", (L.Bin(
                    "+", L.Bin("/", L.Var("vsum"), L.Cast(n_red, ACC)),
                    L.Const(a.attrs["eps"], ACC)),)), ACC))
                k_w = 2 if a.op == "add_layernorm" else 1

                def value(idx):
                    return L.Bin("+", L.Bin("*", L.Bin("*", centred(idx), L.Var("rstd")),
                                            param(k_w, idx)), param(k_w + 1, idx))
        s += red_loops("o", lambda j: finish(full_index(row_idx, j),
                                             L.Cast(value(full_index(row_idx, j)), dt)))
        return s

    row_shape = [shape[k] for k in rows]
    stmts = loop_nest(row_shape, per_row, "r", collapse_all=True)
    if store_anchor:
        acc = L.BufferParam("acc", dt, a.type.rank, "out")
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
    """The epilogue stores the anchor's element at the index it was computed at (no
    movement op after the anchor, output shape = anchor shape): safe in place."""
    desc = nx.descendants(body.nx, anchor)
    return (body.nodes[body.outputs[0]].type.shape == body.nodes[anchor].type.shape
            and not any(body.nodes[n].op in ("reshape", "transpose") for n in desc))


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
