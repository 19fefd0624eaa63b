"""Tensors made from sizes and numbers: arange, full / zeros / ones (and their _like /
new_ forms), scalar_tensor. Symbolic sizes stay symbolic."""
from __future__ import annotations

from ... import ops
from .table import aten_op


@aten_op("arange.start_step", "arange.default", "arange.start")
def arange(ctx):
    a = [ctx.dim(x) if not isinstance(x, float) else x for x in ctx.args]
    if ctx.op == "aten.arange.default":
        start, end, step = 0, a[0], 1
    else:
        start, end = a[0], a[1]
        step = a[2] if len(a) > 2 else ctx.kw("step", 1)
    dt = ctx.out_dtype()
    if any(isinstance(x, float) and not float(x).is_integer() for x in (start, end, step)):
        raise ctx.fail(f"arange({start}, {end}, {step}) with fractional bounds (graphc makes "
                       f"integer ranges)")
    if dt in ("float32", "float64"):
        start, end, step = (int(x) if isinstance(x, float) else x for x in (start, end, step))
        return ops.cast(ops.arange(start, end, step, dtype="int64"), dtype=dt)
    return ops.arange(start, end, step, dtype=dt)


def _filled(ctx, value):
    dt = ctx.out_dtype()
    shape = ctx.out_shape()
    v = ctx.tensor(value if not isinstance(value, bool) or dt == "bool" else int(value), dt)
    return v if shape == () else ops.broadcast_to(v, shape=shape)


@aten_op("full.default", "new_full.default")
def full(ctx):
    return _filled(ctx, ctx.arg(1 if ctx.op == "aten.full.default" else 2, "fill_value"))


@aten_op("full_like.default")
def full_like(ctx):
    return _filled(ctx, ctx.arg(1, "fill_value"))


@aten_op("zeros.default", "zeros_like.default", "new_zeros.default",
         # uninitialised memory in torch: zeros here (a value is defined either way)
         "empty_permuted.default", "empty.memory_format", "empty_like.default",
         "new_empty.default", "empty_strided.default")
def zeros(ctx):
    return _filled(ctx, 0)


@aten_op("ones.default", "ones_like.default", "new_ones.default")
def ones(ctx):
    return _filled(ctx, 1)


@aten_op("scalar_tensor.default")
def scalar_tensor(ctx):
    return ctx.tensor(ctx.arg(0), ctx.out_dtype())
