"""Indexing by tensors: index.Tensor (advanced indexing, as the attention masks of
transformers build it), gather, index_select, embedding."""
from __future__ import annotations

from ... import ops
from ...ir.dims import prod
from ...ops.registry import broadcast_shapes
from .movement import norm_axis
from .table import aten_op


def _wrap(idx, n):
    """Negative ids count from the end (torch)."""
    return ops.where(ops.less(idx, 0), ops.add(idx, ctx_n(n, idx)), idx)


def ctx_n(n, like):
    from ...ir.dims import Sym
    if isinstance(n, Sym):
        return ops.reshape(ops.arange(n, n + 1, dtype=like.dtype), shape=())
    return n


def _rows(x, axes, index_tensors):
    """x's entries at the broadcast index tensors over ``axes`` (moved to the front):
    shape broadcast(index shapes) + x's other dims."""
    rest = [a for a in range(x.ndim) if a not in axes]
    perm = tuple(axes) + tuple(rest)
    xt = x if perm == tuple(range(x.ndim)) else ops.transpose(x, axes=perm)
    sizes = [x.shape[a] for a in axes]
    flat = None
    for k, (idx, n) in enumerate(zip(index_tensors, sizes)):
        if idx.dtype not in ("int32", "int64"):
            raise ValueError(f"index tensor of dtype {idx.dtype}")
        idx = _wrap(ops.cast(idx, dtype="int64") if idx.dtype != "int64" else idx, n)
        stride = prod(sizes[k + 1:])
        term = idx if stride == 1 else ops.mul(idx, ctx_n(stride, idx))
        flat = term if flat is None else ops.add(flat, term)
    bshape = broadcast_shapes(*[tuple(t.shape) for t in index_tensors])
    if tuple(flat.shape) != tuple(bshape):
        flat = ops.broadcast_to(flat, shape=bshape)
    table = ops.reshape(xt, shape=(prod(sizes),) + tuple(x.shape[a] for a in rest))
    return ops.embedding(table, flat), len(bshape), rest


@aten_op("index.Tensor")
def index(ctx):
    x, indices = ctx.arg(0), list(ctx.arg(1))
    axes = [k for k, t in enumerate(indices) if t is not None]
    ts = [indices[k] for k in axes]
    for t in ts:
        if t.dtype == "bool":
            raise ctx.fail("indexing by a bool mask (the result's size depends on the data; "
                           "use torch.where)")
    y, nb, rest = _rows(x, axes, ts)
    adjacent = axes == list(range(axes[0], axes[0] + len(axes)))
    k = axes[0]
    if adjacent and k > 0:
        # torch keeps the broadcast dims where the indexed dims were
        front = list(range(nb, nb + k))
        perm = tuple(front) + tuple(range(nb)) + tuple(range(nb + k, y.ndim))
        y = ops.transpose(y, axes=perm)
    return y


@aten_op("gather.default")
def gather(ctx):
    x, dim, idx = ctx.arg(0), ctx.arg(1), ctx.arg(2)
    return ops.take_along_axis(x, idx, axis=norm_axis(ctx, dim, x.ndim))


@aten_op("index_select.default")
def index_select(ctx):
    x, dim, idx = ctx.arg(0), norm_axis(ctx, ctx.arg(1), ctx.arg(0).ndim), ctx.arg(2)
    y, nb, rest = _rows(x, [dim], [idx])
    if dim > 0:
        perm = tuple(range(1, dim + 1)) + (0,) + tuple(range(dim + 1, y.ndim))
        y = ops.transpose(y, axes=perm)
    return y


@aten_op("embedding.default")
def embedding(ctx):
    return ops.embedding(ctx.arg(0), ctx.arg(1))
