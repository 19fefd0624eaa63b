"""Movement ATen ops: views and reshapes (to the shape torch.export recorded), permutes,
expand, cat, slice / select, split, squeeze / unsqueeze, repeat."""
from __future__ import annotations

from ... import ops
from ...ir.dims import Sym
from ..patterns import pad_axis
from .table import aten_op

BIG = 2 ** 62        # torch writes an open slice end as 2**63 - 1


def norm_axis(ctx, d, rank):
    d = int(d)
    if not -rank <= d < max(rank, 1):
        raise ctx.fail(f"dim {d} is out of range for rank {rank}")
    return d % max(rank, 1)


@aten_op("view.default", "_unsafe_view.default", "reshape.default", "view_copy.default")
def view(ctx):
    x = ctx.arg(0)
    shape = ctx.out_shape()
    return x if tuple(x.shape) == shape else ops.reshape(x, shape=shape)


@aten_op("permute.default", "permute_copy.default")
def permute(ctx):
    x = ctx.arg(0)
    axes = tuple(norm_axis(ctx, d, x.ndim) for d in ctx.arg(1))
    return x if axes == tuple(range(x.ndim)) else ops.transpose(x, axes=axes)


@aten_op("transpose.int")
def transpose(ctx):
    x = ctx.arg(0)
    a, b = norm_axis(ctx, ctx.arg(1), x.ndim), norm_axis(ctx, ctx.arg(2), x.ndim)
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return ops.transpose(x, axes=tuple(axes))


@aten_op("t.default")
def t(ctx):
    x = ctx.arg(0)
    return x if x.ndim < 2 else ops.transpose(x, axes=(1, 0))


@aten_op("unsqueeze.default", "squeeze.dim", "squeeze.dims", "squeeze.default",
         "expand.default", "expand_copy.default", "flatten.using_ints")
def reshape_like(ctx):
    """Rank changes and broadcasts: the recorded output shape says all."""
    x = ctx.arg(0)
    shape = ctx.out_shape()
    if tuple(x.shape) == shape:
        return x
    if ctx.op.startswith("aten.expand"):
        return ops.broadcast_to(x, shape=shape)
    return ops.reshape(x, shape=shape)


@aten_op("cat.default", "concat.default")
def cat(ctx):
    xs = [x for x in ctx.arg(0) if not (x.ndim == 1 and x.shape[0] == 0)]  # torch skips []
    dim = ctx.arg(1, "dim", 0)
    dt = ctx.out_dtype()
    xs = [ctx.tensor(x, dt) for x in xs]
    if len(xs) == 1:
        return xs[0]
    return ops.concat(*xs, axis=norm_axis(ctx, dim, xs[0].ndim))


def _bound(ctx, v, n, default):
    if v is None:
        return default
    v = ctx.dim(v)
    if isinstance(v, int):
        if v >= BIG:
            return n
        if v < 0:
            return n + v if isinstance(n, Sym) else max(n + v, 0)
        return v if isinstance(n, Sym) else min(v, n)
    return v


@aten_op("slice.Tensor", "slice_copy.Tensor")
def slice_(ctx):
    x = ctx.arg(0)
    dim = norm_axis(ctx, ctx.arg(1, "dim", 0), x.ndim)
    n = x.shape[dim]
    start = _bound(ctx, ctx.arg(2, "start"), n, 0)
    end = _bound(ctx, ctx.arg(3, "end"), n, n)
    step = int(ctx.arg(4, "step", 1))
    if start == 0 and end == n and step == 1:
        return x
    idx = [slice(None)] * x.ndim
    idx[dim] = slice(start, end, step)
    return x[tuple(idx)]


@aten_op("select.int", "select_copy.int")
def select(ctx):
    x = ctx.arg(0)
    dim = norm_axis(ctx, ctx.arg(1), x.ndim)
    i = ctx.dim(ctx.arg(2))
    if isinstance(i, int) and i < 0:
        i = x.shape[dim] + i
    idx = [slice(None)] * x.ndim
    idx[dim] = slice(i, i + 1)
    return ops.reshape(x[tuple(idx)], shape=ctx.out_shape())


@aten_op("split_with_sizes.default", "split.Tensor", "split_with_sizes_copy.default",
         "unbind.int")
def split(ctx):
    x = ctx.arg(0)
    outs = ctx.val
    dim = norm_axis(ctx, ctx.arg(2 if ctx.op != "aten.unbind.int" else 1, "dim", 0), x.ndim)
    pieces, start = [], 0
    for k in range(len(outs)):
        shape = ctx.out_shape(k)
        size = 1 if ctx.op == "aten.unbind.int" else shape[dim]
        idx = [slice(None)] * x.ndim
        idx[dim] = slice(start, start + size)
        p = x[tuple(idx)]
        pieces.append(ops.reshape(p, shape=shape) if tuple(p.shape) != shape else p)
        start = start + size
    return tuple(pieces)


@aten_op("repeat.default")
def repeat(ctx):
    """torch's Tensor.repeat (tiling): broadcast along new axes, then merge them."""
    x = ctx.arg(0)
    reps = [ctx.dim(r) for r in ctx.arg(1)]
    lead = len(reps) - x.ndim
    shape = (1,) * lead + tuple(x.shape)
    x = ops.reshape(x, shape=shape) if lead else x
    inter = []
    for r, d in zip(reps, shape):
        inter += [1, d]
    y = ops.reshape(x, shape=tuple(inter))
    big = []
    for r, d in zip(reps, shape):
        big += [r, d]
    y = ops.broadcast_to(y, shape=tuple(big))
    return ops.reshape(y, shape=ctx.out_shape())


@aten_op("constant_pad_nd.default")
def constant_pad_nd(ctx):
    """F.pad with a constant: ``pad`` pairs (before, after) from the last dim backwards;
    a negative amount crops (:func:`pad_axis`)."""
    x, pad, value = ctx.arg(0), list(ctx.arg(1)), ctx.arg(2, "value", 0)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ctx.fail(f"pad {pad} for a rank-{x.ndim} tensor")
    v = ctx.tensor(value if value is not None else 0, x.dtype)
    for k in range(len(pad) // 2):
        x = pad_axis(x, x.ndim - 1 - k, ctx.dim(pad[2 * k]), ctx.dim(pad[2 * k + 1]), v)
    return x
