"""Shape arithmetic, evaluated at import: Shape, Size, Constant, ConstantOfShape, Range,
and the ops that only change a shape (Reshape, Flatten, Squeeze, Unsqueeze)."""
from __future__ import annotations

import numpy as np

from ... import ops
from ...ir.dims import Sym, prod
from .common import axes_of, axis_of, const, dims_tuple
from .context import KNOWN_LIMIT, Known, known_of, np_dtype
from .dtypes import graphc_dtype
from .table import onnx_op


def _dims_array(dims) -> np.ndarray:
    a = np.empty(len(dims), dtype=object)
    for k, d in enumerate(dims):
        a[k] = d
    return a


@onnx_op("Shape")
def shape_(ctx):
    dims = ctx.shape(0)
    n = len(dims)
    start = int(ctx.attr("start", 0))
    end = ctx.attr("end", None)
    start = min(max(start + n if start < 0 else start, 0), n)
    end = n if end is None else int(end)
    end = min(max(end + n if end < 0 else end, 0), n)
    return known_of(_dims_array(dims[start:end]), "int64")


@onnx_op("Size")
def size_(ctx):
    a = np.empty((), dtype=object)
    a[()] = prod(ctx.shape(0))
    return known_of(a, "int64")


@onnx_op("Constant")
def constant(ctx):
    a = ctx.attrs
    if "value" in a:
        arr = a["value"]
        dt = graphc_dtype(_onnx_type_of(arr), "the Constant's value", fail=ctx.fail)
        return known_of(arr, dt)
    if "value_float" in a:
        return known_of(np.asarray(a["value_float"], np.float32), "float32")
    if "value_floats" in a:
        return known_of(np.asarray(a["value_floats"], np.float32), "float32")
    if "value_int" in a:
        return known_of(np.asarray(a["value_int"], np.int64), "int64")
    if "value_ints" in a:
        return known_of(np.asarray(a["value_ints"], np.int64), "int64")
    raise ctx.fail(f"a Constant with {', '.join(a) or 'no value'} (strings and sparse "
                   f"tensors are not supported)")


def _onnx_type_of(arr) -> int:
    from onnx import helper
    try:
        return helper.np_dtype_to_tensor_dtype(arr.dtype)
    except (KeyError, TypeError, ValueError):
        return 0


@onnx_op("ConstantOfShape")
def constant_of_shape(ctx):
    shape = dims_tuple(ctx.need(0, "shape"))
    value = ctx.attr("value")
    if value is None:
        value = np.zeros(1, np.float32)
    dt = graphc_dtype(_onnx_type_of(value), "the ConstantOfShape value", fail=ctx.fail)
    v = np.asarray(value).reshape(-1)[0]
    static = all(isinstance(d, int) for d in shape)
    if any(isinstance(d, int) and d < 0 for d in shape):
        raise ctx.fail(f"negative dim in shape {list(shape)}")
    if static and int(np.prod(shape, dtype=np.int64)) <= KNOWN_LIMIT:
        return known_of(np.full(shape, v, dtype=np_dtype(dt)), dt)
    return ops.broadcast_to(const(ctx, v, dt), shape=shape)


@onnx_op("Range")
def range_(ctx):
    vals = []
    for k, what in enumerate(("start", "limit", "delta")):
        a = np.asarray(ctx.need(k, what)).reshape(-1)
        if a.size != 1:
            raise ctx.fail(f"{what} must be a scalar, got {a.size} values")
        vals.append(a[0])
    dt = ctx.dtype(0)
    start, limit, delta = vals
    if not any(isinstance(v, Sym) for v in vals):
        if dt in ("float32", "float64"):
            t = np_dtype(dt).type
            n = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
            out = (t(start) + np.arange(n, dtype=np_dtype(dt)) * t(delta)).astype(np_dtype(dt))
        else:
            start, limit, delta = int(start), int(limit), int(delta)
            if delta == 0:
                raise ctx.fail("delta is 0")
            n = max(-(-(limit - start) // delta), 0)
            out = start + np.arange(n, dtype=np.int64) * delta
        if out.size <= KNOWN_LIMIT or dt not in ("float32", "float64"):
            return known_of(out, dt)
        return Known(out.astype(np_dtype(dt)), dt)
    if isinstance(delta, Sym):
        raise ctx.fail("a symbolic delta")
    return ops.arange(start, limit, int(delta), dtype=dt)


def _reshape_target(ctx, shape_in, dims, allowzero):
    out = []
    for k, d in enumerate(dims):
        if isinstance(d, int) and d == 0 and not allowzero:
            if k >= len(shape_in):
                raise ctx.fail(f"shape entry {k} is 0 (copy the input's dim) but the input "
                               f"has rank {len(shape_in)}")
            out.append(shape_in[k])
        else:
            out.append(d)
    return tuple(out)


def reshape_val(ctx, k, target):
    """Reshape input ``k`` to ``target`` (may hold one -1): folded when known."""
    kn = ctx.known(k)
    if kn is not None and kn.array.size <= KNOWN_LIMIT:
        try:
            return Known(kn.array.reshape(tuple(int(d) for d in target)), kn.dtype)
        except (ValueError, TypeError):
            pass
    return ops.reshape(ctx.t(k), shape=tuple(target))


@onnx_op("Reshape")
def reshape(ctx):
    dims = dims_tuple(ctx.need(1, "shape"))
    target = _reshape_target(ctx, ctx.shape(0), dims, int(ctx.attr("allowzero", 0)))
    return reshape_val(ctx, 0, target)


@onnx_op("Flatten")
def flatten(ctx):
    shape = ctx.shape(0)
    r = len(shape)
    a = int(ctx.attr("axis", 1))
    if not -r <= a <= r:
        raise ctx.fail(f"axis {a} is out of range for a rank-{r} input")
    a = a + r if a < 0 else a
    return reshape_val(ctx, 0, (prod(shape[:a]), prod(shape[a:])))


def _axes_input(ctx, k=1, what="axes"):
    if ctx.opset < 13 or not ctx.has(k):
        axes = ctx.attr("axes")
        return None if axes is None else [int(a) for a in axes]
    return [int(a) for a in ctx.need_ints(k, what)]


@onnx_op("Squeeze")
def squeeze(ctx):
    shape = ctx.shape(0)
    axes = _axes_input(ctx)
    if axes is None:
        axes = [k for k, d in enumerate(shape) if d == 1]
    axes = axes_of(ctx, axes, len(shape))
    for a in axes:
        if shape[a] != 1:
            raise ctx.fail(f"axis {a} of shape {list(shape)} is {shape[a]}, not 1")
    return reshape_val(ctx, 0, tuple(d for k, d in enumerate(shape) if k not in axes))


@onnx_op("Unsqueeze")
def unsqueeze(ctx):
    shape = ctx.shape(0)
    axes = _axes_input(ctx)
    if axes is None:
        raise ctx.fail("no axes")
    r = len(shape) + len(axes)
    axes = axes_of(ctx, axes, r)
    out, it = [], iter(shape)
    for k in range(r):
        out.append(1 if k in axes else next(it))
    return reshape_val(ctx, 0, tuple(out))
