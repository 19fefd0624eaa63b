"""Movement ONNX ops: Transpose, Concat, Split, Slice, Gather, GatherElements, GatherND,
Expand, Trilu, Tile."""
from __future__ import annotations

import numpy as np

from ... import ops
from ...ir.dims import Sym, prod
from ..patterns import pad_axis
from .common import axis_of, const, dims_tuple, fold
from .context import KNOWN_LIMIT, Known
from .table import onnx_op

BIG = 2 ** 62


@onnx_op("Transpose")
def transpose(ctx):
    r = ctx.rank(0)
    perm = ctx.attr("perm")
    perm = list(range(r))[::-1] if perm is None else [int(p) for p in perm]
    k = fold(ctx, lambda a: np.transpose(a, perm), ctx.dtype(0))
    if k is not None:
        return k
    return ops.transpose(ctx.t(0), axes=tuple(perm))


@onnx_op("Concat")
def concat(ctx):
    r = ctx.rank(0)
    axis = axis_of(ctx, int(ctx.attr("axis")), r)
    k = fold(ctx, lambda *a: np.concatenate([x for x in a if x is not None], axis=axis),
             ctx.dtype(0))
    if k is not None:
        return k
    xs = [x for x in ctx.ts()]
    if len(xs) == 1:
        return ops.reshape(xs[0], shape=tuple(xs[0].shape))
    return ops.concat(*xs, axis=axis)


def take(x, axis: int, index):
    """x's entries at ``index`` (an int tensor, ids in [-n, n)) along ``axis``: the
    index's dims replace the axis (ONNX Gather / np.take). A take_along_axis of the
    [pre, n, post] view with the flattened index [1, m, 1] (every backend runs it as an
    index map); a table graph input's rows read by graph-input ids stay an embedding."""
    from ...ir.dims import prod
    shape = tuple(x.shape)
    ishape = tuple(index.shape)
    if axis == 0 and x.node.op == "constant" and index.node.op == "input" and x.ndim >= 1:
        return ops.embedding(x, index)
    pre, n, post = prod(shape[:axis]), shape[axis], prod(shape[axis + 1:])
    x3 = ops.reshape(x, shape=(pre, n, post))
    i3 = ops.reshape(index, shape=(1, prod(ishape), 1))
    out = ops.take_along_axis(x3, i3, axis=1)
    return ops.reshape(out, shape=shape[:axis] + ishape + shape[axis + 1:])


def take_static(ctx, x, axis: int, idx):
    return take(x, axis, const(ctx, np.asarray(idx, np.int64), "int64"))


def _slice_plan(ctx, shape):
    starts = ctx.need_ints(1, "starts")
    ends = ctx.need_ints(2, "ends")
    r = len(shape)
    axes = ctx.need_ints(3, "axes") if ctx.has(3) else list(range(len(starts)))
    steps = ctx.need_ints(4, "steps") if ctx.has(4) else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.fail("starts, ends, axes and steps differ in length")
    plan = {}
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = axis_of(ctx, int(a), r)
        if a in plan:
            raise ctx.fail(f"axis {a} sliced twice")
        if st == 0:
            raise ctx.fail("a step of 0")
        plan[a] = (s, e, st)
    return plan


def _bound(v, dim, step):
    """An ONNX start/end as a graphc slice bound for a positive step (None: the end)."""
    if isinstance(v, Sym):
        return v
    v = int(v)
    if v >= BIG or (isinstance(dim, int) and v >= dim):
        return None if not isinstance(dim, int) else dim
    if v <= -BIG:
        return 0
    if v < 0:
        if isinstance(dim, int):
            return max(dim + v, 0)
        return dim + v
    return v


@onnx_op("Slice")
def slice_(ctx):
    shape = ctx.shape(0)
    plan = _slice_plan(ctx, shape)
    kn = ctx.known(0)
    if kn is not None and kn.array.size <= KNOWN_LIMIT:
        idx = [slice(None)] * len(shape)
        ok = True
        for a, (s, e, st) in plan.items():
            if any(isinstance(v, Sym) for v in (s, e)):
                ok = False
                break
            idx[a] = slice(max(min(int(s), BIG), -BIG), max(min(int(e), BIG), -BIG), int(st))
        if ok:
            return Known(kn.array[tuple(idx)], kn.dtype)
    x = ctx.t(0)
    starts, stops, steps = [None] * len(shape), [None] * len(shape), [1] * len(shape)
    flips = []
    for a, (s, e, st) in plan.items():
        d = shape[a]
        if st < 0:
            if not isinstance(d, int) or isinstance(s, Sym) or isinstance(e, Sym):
                raise ctx.fail("a negative step on a symbolic dim")
            s = max(min(int(s), BIG), -BIG)
            e = max(min(int(e), BIG), -BIG)
            flips.append((a, list(range(d))[slice(s, e, st)]))
            continue
        starts[a] = _bound(s, d, st)
        stops[a] = _bound(e, d, st)
        if isinstance(d, int) and isinstance(starts[a], int) and isinstance(stops[a], int):
            starts[a], stops[a], _ = slice(starts[a], stops[a]).indices(d)
            stops[a] = max(stops[a], starts[a])
        steps[a] = int(st)
    if any(s is not None for s in starts) or any(e is not None for e in stops) \
            or any(st != 1 for st in steps):
        x = ops.slice(x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    for a, idx in flips:
        x = take_static(ctx, x, a, idx)
    if x is ctx.t(0):
        x = ops.reshape(x, shape=tuple(x.shape))
    return x


@onnx_op("Split")
def split(ctx):
    shape = ctx.shape(0)
    axis = axis_of(ctx, int(ctx.attr("axis", 0)), len(shape))
    n_out = ctx.n_out
    if ctx.has(1):
        sizes = ctx.need_ints(1, "split")
    elif ctx.attr("split") is not None:
        sizes = [int(s) for s in ctx.attr("split")]
    else:
        d = shape[axis]
        n = int(ctx.attr("num_outputs", n_out))
        if not isinstance(d, int):
            from ...ir.dims import exact_div
            q = exact_div(d, n)
            if q is None:
                raise ctx.fail(f"axis {axis} ({d}) does not split into {n} equal parts")
            sizes = [q] * n
        else:
            part = -(-d // n)
            sizes = [part] * (n - 1) + [d - part * (n - 1)]
            if d % n and ctx.attr("num_outputs") is None:
                raise ctx.fail(f"axis {axis} ({d}) does not split into {n} equal parts")
    outs, start = [], 0
    kn = ctx.known(0)
    for s in sizes:
        stop = start + s
        if kn is not None and kn.array.size <= KNOWN_LIMIT and not isinstance(stop, Sym):
            idx = [slice(None)] * len(shape)
            idx[axis] = slice(start, stop)
            outs.append(Known(kn.array[tuple(idx)], kn.dtype))
        else:
            st = [None] * len(shape)
            en = [None] * len(shape)
            st[axis], en[axis] = start, stop
            outs.append(ops.slice(ctx.t(0), starts=tuple(st), stops=tuple(en),
                                  steps=(1,) * len(shape)))
        start = stop
    return outs


def _unit_reshape_axis(src_shape, out_shape, axis):
    """The axis of ``src_shape`` that axis ``axis`` (not of size 1) of ``out_shape`` is,
    when the reshape only adds or drops dims of size 1; else None."""
    src = [k for k, d in enumerate(src_shape) if d != 1]
    out = [k for k, d in enumerate(out_shape) if d != 1]
    if [src_shape[k] for k in src] != [out_shape[k] for k in out] or axis not in out:
        return None
    return src[out.index(axis)]


def _slice_through_layout(x, axis, start, n):
    """x[start:start + n] along ``axis``, taken before the transposes and size-1 reshapes
    that made x (torch's MultiheadAttention export: view [S, B, 3, E] -> unsqueeze ->
    transpose -> squeeze -> select q, k, v), then those applied to the part: a slice of
    the GEMM's own output rather than of a permuted copy of it."""
    chain, t, ax = [], x, axis
    while t.node.op in ("transpose", "reshape") and t.type.shape[ax] != 1:
        src = t.node.inputs[0]
        src_t = t.builder.wrap(src)
        if t.node.op == "transpose":
            new_ax = t.node.attrs["axes"][ax]
        else:
            new_ax = _unit_reshape_axis(tuple(src_t.shape), tuple(t.shape), ax)
            if new_ax is None:
                break
        chain.append((t, ax))
        t, ax = src_t, new_ax
    r = t.ndim
    part = ops.slice(t, starts=tuple(start if k == ax else None for k in range(r)),
                     stops=tuple(start + n if k == ax else None for k in range(r)),
                     steps=(1,) * r)
    for node_t, out_ax in reversed(chain):
        if node_t.node.op == "transpose":
            part = ops.transpose(part, axes=tuple(node_t.node.attrs["axes"]))
        else:
            shp = list(node_t.shape)
            shp[out_ax] = n
            part = ops.reshape(part, shape=tuple(shp))
    return part


@onnx_op("Gather")
def gather(ctx):
    shape = ctx.shape(0)
    axis = axis_of(ctx, int(ctx.attr("axis", 0)), len(shape))
    d = shape[axis]

    def fn(a, i):
        return np.take(a, np.where(i < 0, i + a.shape[axis], i), axis=axis)
    k = fold(ctx, fn, ctx.dtype(0))
    if k is not None:
        return k
    x = ctx.t(0)
    ki = ctx.known(1)
    if ki is not None and ki.array.dtype != object and isinstance(d, int):
        a = ki.array.astype(np.int64)
        if a.size and (a.min() < -d or a.max() >= d):
            raise ctx.fail(f"index {int(a[(a < -d) | (a >= d)].reshape(-1)[0])} is out of "
                           f"range for axis {axis} of size {d}")
        a = np.where(a < 0, a + d, a)
        flat = a.reshape(-1)
        if flat.size and np.array_equal(flat, np.arange(flat[0], flat[0] + flat.size)):
            # a constant run of ids (torch's x[0] / unbind selects): a slice, a view the
            # kernels read through, not an index map
            part = _slice_through_layout(x, axis, int(flat[0]), flat.size)
            return ops.reshape(part, shape=tuple(shape[:axis]) + a.shape
                               + tuple(shape[axis + 1:]))
        return take_static(ctx, x, axis, a)
    return take(x, axis, ctx.t(1))


@onnx_op("GatherElements")
def gather_elements(ctx):
    x, idx = ctx.t(0), ctx.t(1)
    axis = axis_of(ctx, int(ctx.attr("axis", 0)), x.ndim)
    if x.ndim != idx.ndim:
        raise ctx.fail(f"data {x.type} and indices {idx.type} differ in rank")
    if any(a != b for k, (a, b) in enumerate(zip(x.shape, idx.shape)) if k != axis):
        st = [None] * x.ndim
        en = [None if k == axis else idx.shape[k] for k in range(x.ndim)]
        x = ops.slice(x, starts=tuple(st), stops=tuple(en), steps=(1,) * x.ndim)
    return ops.take_along_axis(x, idx, axis=axis)


def dims_tensor(ctx, dims, dtype: str):
    """A 1-D tensor of ``dims`` (ints or symbolic dims)."""
    from .context import known_of, materialize
    a = np.empty(len(dims), dtype=object)
    for k, d in enumerate(dims):
        a[k] = d
    return materialize(ctx.values.builder, known_of(a, dtype))


@onnx_op("GatherND")
def gather_nd(ctx):
    x, idx = ctx.t(0), ctx.t(1)
    b = int(ctx.attr("batch_dims", 0))
    shape, ishape = tuple(x.shape), tuple(idx.shape)
    m = ishape[-1]
    if not isinstance(m, int):
        raise ctx.fail(f"a symbolic index depth {m}")
    dims = shape[b:b + m]
    strides = [prod(dims[k + 1:]) for k in range(m)]
    dt = idx.dtype
    zero = const(ctx, 0, dt)
    i = ops.where(ops.less(idx, zero), ops.add(idx, dims_tensor(ctx, dims, dt)), idx)
    flat = ops.sum(ops.mul(i, dims_tensor(ctx, strides, dt)), axis=-1)   # ishape[:-1]
    block = prod(dims)
    rest = shape[b + m:]
    nb = prod(shape[:b])
    if b:
        # each batch's rows come after the previous batches' blocks
        bi = ops.reshape(ops.arange(0, nb, dtype=dt), shape=tuple(ishape[:b]) + (1,) * (
            len(ishape) - 1 - b))
        flat = ops.add(flat, ops.mul(bi, ops.reshape(dims_tensor(ctx, [block], dt),
                                                     shape=())))
    table = ops.reshape(x, shape=(nb * block,) + tuple(rest))
    return take(table, 0, flat)


def bidirectional(ctx, a, b):
    r = max(len(a), len(b))
    a = (1,) * (r - len(a)) + tuple(a)
    b = (1,) * (r - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if isinstance(x, int) and x == 1:
            out.append(y)
        elif isinstance(y, int) and y == 1:
            out.append(x)
        elif x == y:
            out.append(x)
        else:
            raise ctx.fail(f"shapes {list(a)} and {list(b)} do not broadcast")
    return tuple(out)


@onnx_op("Expand")
def expand(ctx):
    target = bidirectional(ctx, ctx.shape(0), dims_tuple(ctx.need(1, "shape")))
    kn = ctx.known(0)
    if kn is not None and all(isinstance(d, int) for d in target) \
            and int(np.prod(target, dtype=np.int64)) <= KNOWN_LIMIT:
        return Known(np.broadcast_to(kn.array, target).copy(), kn.dtype)
    x = ctx.t(0)
    if tuple(x.shape) == target:
        return ops.reshape(x, shape=target)
    return ops.broadcast_to(x, shape=target)


@onnx_op("Trilu")
def trilu(ctx):
    k = 0
    if ctx.has(1):
        k = ctx.need_ints(1, "k")[0]
    upper = int(ctx.attr("upper", 1))
    x = ctx.t(0)
    return ops.triu(x, k=k) if upper else ops.tril(x, k=k)


@onnx_op("Tile")
def tile(ctx):
    reps = dims_tuple(ctx.need(1, "repeats"))
    x = ctx.t(0)
    shape = tuple(x.shape)
    if len(reps) != len(shape):
        raise ctx.fail(f"repeats {list(reps)} must have one entry per axis of {x.type}")
    # [.., d, ..] -> [.., 1, d, ..] broadcast to [.., r, d, ..] -> reshape [.., r*d, ..]
    inter = []
    big = []
    for d, r in zip(shape, reps):
        inter += [1, d]
        big += [r, d]
    y = ops.broadcast_to(ops.reshape(x, shape=tuple(inter)), shape=tuple(big))
    return ops.reshape(y, shape=tuple(r * d for d, r in zip(shape, reps)))


@onnx_op("Pad")
def pad(ctx):
    """Constant padding (negative pads crop); reflect / edge / wrap are not supported."""
    mode = ctx.attr("mode", "constant")
    if mode != "constant":
        raise ctx.fail(f"mode={mode!r} (graphc pads with a constant)")
    x = ctx.t(0)
    r = x.ndim
    pads = ctx.need_ints(1, "pads") if ctx.opset >= 11 else list(ctx.attr("pads"))
    value = 0
    if ctx.has(2):
        v = np.asarray(ctx.need(2, "constant_value")).reshape(-1)
        value = v[0].item() if v.size else 0
    axes = list(range(r))
    if ctx.has(3):
        axes = [axis_of(ctx, int(a), r) for a in ctx.need_ints(3, "axes")]
    n = len(axes)
    if len(pads) != 2 * n:
        raise ctx.fail(f"{len(pads)} pads for {n} axes")
    fill = const(ctx, value, x.dtype)
    for a, before, after in zip(axes, pads[:n], pads[n:]):
        x = pad_axis(x, a, before, after, fill)
    if x is ctx.t(0):
        x = ops.reshape(x, shape=tuple(x.shape))
    return x
