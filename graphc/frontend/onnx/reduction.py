"""Reductions and scans: Reduce*, ArgMax / ArgMin, CumSum, Softmax, LogSoftmax, TopK."""
from __future__ import annotations

import numpy as np

from ... import ops
from ...ir.dims import prod
from ...ir.types import FLOAT_DTYPES
from .common import axes_of, axis_of, const, fold
from .context import known_of
from .movement import take_static
from .table import onnx_op

# ops whose axes became an input at opset 18 (ReduceSum at 13)
_AXES_INPUT_SINCE = {"ReduceSum": 13}


def _reduce_axes(ctx):
    r = ctx.rank(0)
    if ctx.opset >= _AXES_INPUT_SINCE.get(ctx.op_type, 18):
        axes = ctx.need_ints(1, "axes") if ctx.has(1) else []
    else:
        axes = list(ctx.attr("axes", []) or [])
    if not axes:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return None
        return list(range(r))
    return axes_of(ctx, [int(a) for a in axes], r)


def _empty_fill(ctx, x, axes, keep, value):
    shape = tuple(1 if k in axes else d for k, d in enumerate(x.shape)) if keep else \
        tuple(d for k, d in enumerate(x.shape) if k not in axes)
    return ops.broadcast_to(const(ctx, value, x.dtype), shape=shape)


def _reduce(ctx, x, axes, keep, kind):
    if kind in ("sum", "sumsq", "l2", "l1", "logsum", "logsumexp"):
        if kind in ("sumsq", "l2"):
            x = ops.mul(x, x)
        elif kind == "l1":
            x = ops.abs(x)
        if kind == "logsumexp":
            m = ops.max(x, axis=tuple(axes), keepdims=True)
            s = ops.sum(ops.exp(ops.sub(x, m)), axis=tuple(axes), keepdims=keep)
            mk = m if keep else ops.reshape(m, shape=tuple(s.shape))
            return ops.add(ops.log(s), mk)
        s = ops.sum(x, axis=tuple(axes), keepdims=keep)
        if kind == "l2":
            return ops.sqrt(s)
        if kind == "logsum":
            return ops.log(s)
        return s
    if kind == "mean":
        return ops.mean(x, axis=tuple(axes), keepdims=keep)
    if kind == "max":
        return ops.max(x, axis=tuple(axes), keepdims=keep)
    if kind == "min":
        return ops.min(x, axis=tuple(axes), keepdims=keep)
    raise AssertionError(kind)


_KINDS = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min",
          "ReduceL2": "l2", "ReduceL1": "l1", "ReduceSumSquare": "sumsq",
          "ReduceLogSum": "logsum", "ReduceLogSumExp": "logsumexp"}
_EMPTY = {"sum": 0, "sumsq": 0, "l2": 0, "l1": 0, "logsum": -np.inf, "logsumexp": -np.inf,
          "mean": np.nan}


@onnx_op(*_KINDS)
def reduce(ctx):
    kind = _KINDS[ctx.op_type]
    keep = bool(int(ctx.attr("keepdims", 1)))
    axes = _reduce_axes(ctx)
    x = ctx.t(0)
    if axes is None:
        return ops.reshape(x, shape=tuple(x.shape))
    if any(isinstance(x.shape[a], int) and x.shape[a] == 0 for a in axes):
        if kind in ("max", "min"):
            if x.dtype in FLOAT_DTYPES:
                v = -np.inf if kind == "max" else np.inf
            elif x.dtype == "bool":
                v = kind == "min"
            else:
                info = np.iinfo(x.dtype)
                v = info.min if kind == "max" else info.max
        else:
            v = _EMPTY[kind]
        return _empty_fill(ctx, x, axes, keep, v)
    dt = x.dtype
    if dt not in FLOAT_DTYPES and kind in ("l2", "mean", "logsum", "logsumexp"):
        y = _reduce(ctx, ops.cast(x, dtype="float64"), axes, keep, kind)
        return ops.cast(y, dtype=dt)
    return _reduce(ctx, x, axes, keep, kind)


@onnx_op("ReduceProd")
def reduce_prod(ctx):
    """Only on values known at import (the product of shape dims)."""
    keep = bool(int(ctx.attr("keepdims", 1)))
    axes = _reduce_axes(ctx)
    k = fold(ctx, lambda a, *_: np.prod(a, axis=None if axes is None else tuple(axes),
                                        keepdims=keep), ctx.dtype(0), ks=[0])
    if k is None:
        raise ctx.fail("ReduceProd of tensor data: graphc has no product reduction (it "
                       "folds ReduceProd of shapes and constants at import)")
    return k


@onnx_op("ArgMax", "ArgMin")
def argmax(ctx):
    x = ctx.t(0)
    axis = axis_of(ctx, int(ctx.attr("axis", 0)), x.ndim)
    keep = bool(int(ctx.attr("keepdims", 1)))
    fn = ops.argmax if ctx.op_type == "ArgMax" else ops.argmin
    if int(ctx.attr("select_last_index", 0)):
        n = x.shape[axis]
        if not isinstance(n, int):
            raise ctx.fail("select_last_index on a symbolic axis")
        i = fn(take_static(ctx, x, axis, np.arange(n)[::-1]), axis=axis, keepdims=keep)
        return ops.sub(const(ctx, n - 1, "int64"), i)
    return fn(x, axis=axis, keepdims=keep)


@onnx_op("CumSum")
def cumsum(ctx):
    x = ctx.t(0)
    axis = axis_of(ctx, int(ctx.need_ints(1, "axis")[0]), x.ndim)
    exclusive = int(ctx.attr("exclusive", 0))
    reverse = int(ctx.attr("reverse", 0))
    n = x.shape[axis]
    if reverse:
        if not isinstance(n, int):
            raise ctx.fail("reverse on a symbolic axis")
        x = take_static(ctx, x, axis, np.arange(n)[::-1])
    if exclusive:
        zshape = tuple(1 if k == axis else d for k, d in enumerate(x.shape))
        zeros = ops.broadcast_to(const(ctx, 0, x.dtype), shape=zshape)
        stops = [None] * x.ndim
        stops[axis] = n - 1
        head = ops.slice(x, starts=(None,) * x.ndim, stops=tuple(stops),
                         steps=(1,) * x.ndim)
        x = ops.concat(zeros, head, axis=axis)
    y = ops.cumsum(x, axis=axis)
    if reverse:
        y = take_static(ctx, y, axis, np.arange(n)[::-1])
    return y


def _coerced(ctx, x, fn):
    """Softmax-like ops before opset 13: over the 2-D view [prod(d[:axis]), rest]."""
    r = x.ndim
    axis = axis_of(ctx, int(ctx.attr("axis", 1)), r)
    shape = tuple(x.shape)
    y = fn(ops.reshape(x, shape=(prod(shape[:axis]), prod(shape[axis:]))), 1)
    return ops.reshape(y, shape=shape)


def _log_softmax(x, axis):
    m = ops.max(x, axis=axis, keepdims=True)
    s = ops.sub(x, m)
    return ops.sub(s, ops.log(ops.sum(ops.exp(s), axis=axis, keepdims=True)))


@onnx_op("Softmax", "LogSoftmax")
def softmax(ctx):
    x = ctx.t(0)
    fn = (lambda t, a: ops.softmax(t, axis=a)) if ctx.op_type == "Softmax" else _log_softmax
    if ctx.opset < 13:
        return _coerced(ctx, x, fn)
    return fn(x, axis_of(ctx, int(ctx.attr("axis", -1)), x.ndim))


@onnx_op("TopK")
def topk(ctx):
    x = ctx.t(0)
    k = int(ctx.need_ints(1, "K")[0])
    axis = axis_of(ctx, int(ctx.attr("axis", -1)), x.ndim)
    largest = int(ctx.attr("largest", 1))
    dt = x.dtype
    xf = x if dt in FLOAT_DTYPES else ops.cast(x, dtype="float64")
    if not largest:
        xf = ops.neg(xf)
    if k == 0:
        shape = tuple(0 if a == axis else d for a, d in enumerate(x.shape))
        return [known_of(np.zeros(shape, x.type.np_dtype), dt),
                known_of(np.zeros(shape, np.int64), "int64")]
    vals = ops.topk(xf, k=k, axis=axis, output="values")
    idx = ops.topk(xf, k=k, axis=axis, output="indices")
    if not largest:
        vals = ops.neg(vals)
    if dt not in FLOAT_DTYPES:
        vals = ops.cast(vals, dtype=dt)
    return [vals, idx]
