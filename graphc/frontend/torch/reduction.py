"""Reductions: sum, mean, amax / amin, max / min over a dim, any / all, argmax / argmin,
var, vector norms, softmax / log_softmax, cumsum."""
from __future__ import annotations

from ... import ops
from .movement import norm_axis
from .table import aten_op


def _axes(ctx, x, dims):
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return None
    if isinstance(dims, int):
        dims = [dims]
    return tuple(sorted(norm_axis(ctx, d, x.ndim) for d in dims))


def _in(ctx, x):
    dt = ctx.kw("dtype")
    return ops.cast(x, dtype=ctx.out_dtype()) if dt is not None and x.dtype != ctx.out_dtype() \
        else x


@aten_op("sum.dim_IntList", "sum.default")
def sum_(ctx):
    x = _in(ctx, ctx.arg(0))
    if x.dtype == "bool":
        x = ops.cast(x, dtype="int64")
    return ops.sum(x, axis=_axes(ctx, x, ctx.arg(1, "dim")), keepdims=bool(ctx.arg(2, "keepdim",
                                                                                 False)))


@aten_op("mean.dim", "mean.default")
def mean(ctx):
    x = _in(ctx, ctx.arg(0))
    return ops.mean(x, axis=_axes(ctx, x, ctx.arg(1, "dim")),
                    keepdims=bool(ctx.arg(2, "keepdim", False)))


@aten_op("amax.default", "amin.default")
def amax(ctx):
    x = ctx.arg(0)
    fn = ops.max if ctx.op == "aten.amax.default" else ops.min
    return fn(x, axis=_axes(ctx, x, ctx.arg(1, "dim")), keepdims=bool(ctx.arg(2, "keepdim", False)))


@aten_op("max.dim", "min.dim")
def max_dim(ctx):
    x = ctx.arg(0)
    ax = norm_axis(ctx, ctx.arg(1), x.ndim)
    keep = bool(ctx.arg(2, "keepdim", False))
    vals = (ops.max if ctx.op == "aten.max.dim" else ops.min)(x, axis=ax, keepdims=keep)
    idx = (ops.argmax if ctx.op == "aten.max.dim" else ops.argmin)(x, axis=ax, keepdims=keep)
    return (vals, idx)


@aten_op("max.default", "min.default")
def max_all(ctx):
    return (ops.max if ctx.op == "aten.max.default" else ops.min)(ctx.arg(0))


@aten_op("argmax.default", "argmin.default")
def argmax(ctx):
    x = ctx.arg(0)
    d = ctx.arg(1, "dim")
    fn = ops.argmax if ctx.op == "aten.argmax.default" else ops.argmin
    if d is None:
        return fn(ops.reshape(x, shape=(-1,)), axis=0)
    return fn(x, axis=norm_axis(ctx, d, x.ndim), keepdims=bool(ctx.arg(2, "keepdim", False)))


@aten_op("any.dim", "any.dims", "any.default", "all.dim", "all.dims", "all.default")
def any_(ctx):
    x = ctx.arg(0)
    if x.dtype != "bool":
        x = ops.not_equal(x, 0)
    ax = _axes(ctx, x, ctx.arg(1, "dim"))
    keep = bool(ctx.arg(2, "keepdim", False))
    # any = max over bools as ints; all = min
    i = ops.cast(x, dtype="int32")
    r = (ops.max if ".any." in ctx.op else ops.min)(i, axis=ax, keepdims=keep)
    return ops.not_equal(r, 0)


@aten_op("linalg_vector_norm.default")
def vector_norm(ctx):
    """torch.linalg.vector_norm / Tensor.norm (weight norm's g * v / ||v||): ord 2 the
    root of the sum of squares, 1 the sum of |x|, inf / -inf the max / min of |x|, 0 the
    count of non-zeros, any other p (sum |x|^p)^(1/p)."""
    x = _in(ctx, ctx.arg(0))
    p = float(ctx.arg(1, "ord", 2))
    ax = _axes(ctx, x, ctx.arg(2, "dim"))
    keep = bool(ctx.arg(3, "keepdim", False))
    if x.dtype not in ("float32", "float64"):
        raise ctx.fail(f"the norm of a {x.dtype} tensor")
    a = ops.abs(x)
    if p == 2:
        return ops.sqrt(ops.sum(ops.mul(x, x), axis=ax, keepdims=keep))
    if p == 1:
        return ops.sum(a, axis=ax, keepdims=keep)
    if p in (float("inf"), float("-inf")):
        return (ops.max if p > 0 else ops.min)(a, axis=ax, keepdims=keep)
    if p == 0:
        nz = ops.cast(ops.not_equal(x, ctx.tensor(0.0, x.dtype)), dtype=x.dtype)
        return ops.sum(nz, axis=ax, keepdims=keep)
    s = ops.sum(ops.pow(a, ctx.tensor(p, x.dtype)), axis=ax, keepdims=keep)
    return ops.pow(s, ctx.tensor(1.0 / p, x.dtype))


@aten_op("var.correction", "var.dim")
def var(ctx):
    x = ctx.arg(0)
    ax = _axes(ctx, x, ctx.arg(1, "dim"))
    keep = bool(ctx.kw("keepdim", ctx.arg(3, default=False) if ctx.op == "aten.var.dim"
                       else False))
    corr = ctx.kw("correction", 1 if ctx.op == "aten.var.dim" and ctx.arg(2, default=True)
                  else (0 if ctx.op == "aten.var.dim" else 1))
    m = ops.mean(x, axis=ax, keepdims=True)
    d = ops.sub(x, m)
    s = ops.sum(ops.mul(d, d), axis=ax, keepdims=keep)
    n = 1
    for a in (ax if ax is not None else range(x.ndim)):
        n = n * x.shape[a]
    denom = n - int(corr)
    if isinstance(denom, int):
        return ops.div(s, float(denom))
    return ops.div(s, ctx.tensor(denom, x.dtype))


@aten_op("_softmax.default", "softmax.int")
def softmax(ctx):
    x = ctx.arg(0)
    dt = ctx.out_dtype()
    if x.dtype != dt:
        x = ops.cast(x, dtype=dt)
    return ops.softmax(x, axis=norm_axis(ctx, ctx.arg(1), x.ndim))


@aten_op("_safe_softmax.default")
def safe_softmax(ctx):
    """softmax whose rows of only -inf give zeros (torch's masked attention), not NaN."""
    y = softmax(ctx)
    x = ctx.arg(0)
    ax = norm_axis(ctx, ctx.arg(1), x.ndim)
    dead = ops.equal(ops.max(x, axis=ax, keepdims=True), float("-inf"))
    return ops.where(dead, 0.0, y)


@aten_op("_log_softmax.default", "log_softmax.int")
def log_softmax(ctx):
    x = ctx.arg(0)
    ax = norm_axis(ctx, ctx.arg(1), x.ndim)
    m = ops.max(x, axis=ax, keepdims=True)
    z = ops.sub(x, m)
    return ops.sub(z, ops.log(ops.sum(ops.exp(z), axis=ax, keepdims=True)))


@aten_op("cumsum.default")
def cumsum(ctx):
    x = _in(ctx, ctx.arg(0))
    if x.dtype != ctx.out_dtype():
        x = ops.cast(x, dtype=ctx.out_dtype())
    return ops.cumsum(x, axis=norm_axis(ctx, ctx.arg(1), x.ndim))
