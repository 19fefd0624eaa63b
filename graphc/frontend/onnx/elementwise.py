"""Elementwise ONNX ops: arithmetic, comparisons, logic, unary math, Cast, Clip, Where."""
from __future__ import annotations

import numpy as np

from ... import ops
from ...ir.types import FLOAT_DTYPES
from .common import as_tensor_dtype, const, fold, int_div
from .context import known_of
from .dtypes import graphc_dtype
from .table import onnx_op

_BINARY = {"Add": (ops.add, np.add), "Sub": (ops.sub, np.subtract),
           "Mul": (ops.mul, np.multiply),
           "Equal": (ops.equal, np.equal), "Greater": (ops.greater, np.greater),
           "Less": (ops.less, np.less), "GreaterOrEqual": (ops.greater_equal, np.greater_equal),
           "LessOrEqual": (ops.less_equal, np.less_equal),
           "And": (ops.logical_and, np.logical_and), "Or": (ops.logical_or, np.logical_or),
           "Xor": (ops.logical_xor, np.logical_xor)}
_BOOL_OUT = ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor")


def _same(ctx, a, b):
    if a.dtype != b.dtype:
        raise ctx.fail(f"operands have different types ({a.dtype}, {b.dtype})")
    return a, b


@onnx_op(*_BINARY)
def binary(ctx):
    gop, nop = _BINARY[ctx.op_type]
    out_dt = "bool" if ctx.op_type in _BOOL_OUT else ctx.dtype(0)
    k = fold(ctx, nop, out_dt)
    if k is not None:
        return k
    a, b = _same(ctx, ctx.t(0), ctx.t(1))
    if ctx.op_type == "Equal" and a.dtype == "bool":
        return ops.logical_not(ops.logical_xor(a, b))
    return gop(a, b)


@onnx_op("Div")
def div(ctx):
    dt = ctx.dtype(0)
    if dt not in FLOAT_DTYPES:
        k = fold(ctx, int_div, dt)
        if k is not None:
            return k
    a, b = _same(ctx, ctx.t(0), ctx.t(1))
    if dt in FLOAT_DTYPES:
        return ops.div(a, b)
    # ONNX truncates toward zero; graphc's integer div floors: add one where the
    # remainder is not 0 and the signs differ.
    q = ops.div(a, b)
    r = ops.sub(a, ops.mul(q, b))
    zero = const(ctx, 0, dt)
    fix = ops.logical_and(ops.not_equal(r, zero),
                          ops.logical_xor(ops.less(a, zero), ops.less(b, zero)))
    return ops.where(fix, ops.add(q, const(ctx, 1, dt)), q)


@onnx_op("Pow")
def pow_(ctx):
    x = ctx.t(0)
    ky = ctx.known(1)
    if x.dtype in FLOAT_DTYPES and ky is not None and ky.array.dtype != object \
            and ky.array.size == 1 and ky.array.ndim <= x.ndim:
        e = float(ky.array.reshape(()))
        # x ** 2, x ** 3 (LayerNorm / RMSNorm variances, tanh-GELU's cube) as products:
        # a multiply fuses into any kernel, a pow call per element costs far more
        if e in (1.0, 2.0, 3.0):
            out = x
            for _ in range(int(e) - 1):
                out = ops.mul(out, x)
            return out if e != 1.0 else ops.reshape(x, shape=tuple(x.shape))
        if e == 0.5:
            return ops.sqrt(x)
    y = ctx.t(1)
    if x.dtype in FLOAT_DTYPES:
        return ops.pow(x, as_tensor_dtype(y, x.dtype))
    if y.dtype in FLOAT_DTYPES:
        return ops.cast(ops.pow(ops.cast(x, dtype="float64"), as_tensor_dtype(y, "float64")),
                        dtype=x.dtype)
    return ops.pow(x, as_tensor_dtype(y, x.dtype))


def _variadic(gop, nop):
    def tr(ctx):
        k = fold(ctx, lambda *a: _reduce_list(nop, a), ctx.dtype(0))
        if k is not None:
            return k
        xs = ctx.ts()
        out = xs[0]
        for x in xs[1:]:
            out = gop(*_same(ctx, out, x))
        if len(xs) == 1:
            out = ops.reshape(out, shape=tuple(out.shape))   # a new node (Identity)
        return out
    return tr


def _reduce_list(fn, arrays):
    out = arrays[0]
    for a in arrays[1:]:
        out = fn(out, a)
    return out


onnx_op("Max")(_variadic(ops.maximum, np.maximum))
onnx_op("Min")(_variadic(ops.minimum, np.minimum))
onnx_op("Sum")(_variadic(ops.add, np.add))


@onnx_op("Mean")
def mean_(ctx):
    xs = ctx.ts()
    out = xs[0]
    for x in xs[1:]:
        out = ops.add(*_same(ctx, out, x))
    return ops.div(out, const(ctx, len(xs), out.dtype)) if len(xs) > 1 else out


_UNARY_FLOAT = {"Exp": ops.exp, "Log": ops.log, "Sqrt": ops.sqrt, "Tanh": ops.tanh,
                "Sigmoid": ops.sigmoid, "Erf": ops.erf, "Sin": ops.sin, "Cos": ops.cos,
                "Floor": ops.floor, "Ceil": ops.ceil, "Reciprocal": ops.reciprocal}
_UNARY_ANY = {"Abs": (ops.abs, np.abs), "Neg": (ops.neg, np.negative),
              "Sign": (ops.sign, np.sign), "Not": (ops.logical_not, np.logical_not)}


@onnx_op(*_UNARY_FLOAT)
def unary_float(ctx):
    x = ctx.t(0)
    if x.dtype not in FLOAT_DTYPES:
        raise ctx.fail(f"{ctx.op_type} of a {x.dtype} tensor: ONNX defines it for floats")
    return _UNARY_FLOAT[ctx.op_type](x)


@onnx_op(*_UNARY_ANY)
def unary_any(ctx):
    gop, nop = _UNARY_ANY[ctx.op_type]
    k = fold(ctx, nop, ctx.dtype(0))
    if k is not None:
        return k
    return gop(ctx.t(0))


@onnx_op("Relu")
def relu(ctx):
    x = ctx.t(0)
    if x.dtype in FLOAT_DTYPES:
        return ops.relu(x)
    return ops.maximum(x, const(ctx, 0, x.dtype))


@onnx_op("IsNaN")
def isnan(ctx):
    return ops.isnan(ctx.t(0))


@onnx_op("IsInf")
def isinf(ctx):
    x = ctx.t(0)
    pos, neg = int(ctx.attr("detect_positive", 1)), int(ctx.attr("detect_negative", 1))
    inf = ops.isinf(x)
    if pos and neg:
        return inf
    if not pos and not neg:
        return ops.logical_and(inf, ops.logical_not(inf))
    zero = const(ctx, 0, x.dtype)
    sign = ops.greater(x, zero) if pos else ops.less(x, zero)
    return ops.logical_and(inf, sign)


@onnx_op("Identity", "Dropout")
def identity(ctx):
    v = ctx.val(0)
    if ctx.op_type == "Dropout":
        training = ctx.need(2, "training_mode") if ctx.has(2) else np.zeros(1, bool)
        ratio = ctx.need(1, "ratio") if ctx.has(1) else np.full(1, 0.5)
        if bool(np.asarray(training).reshape(-1)[0]) and \
                float(np.asarray(ratio).reshape(-1)[0]) != 0.0:
            raise ctx.fail("training_mode=True with a nonzero ratio: graphc runs "
                           "inference (Dropout is the identity there)")
    outs = [v.known if v.known is not None and v.tensor is None else ctx.t(0)]
    if ctx.wants(1):
        shape = ctx.shape(0)
        if all(isinstance(d, int) for d in shape):
            outs.append(known_of(np.ones(shape, bool), "bool"))
        else:
            outs.append(ops.broadcast_to(const(ctx, True, "bool"), shape=shape))
    return outs


def _target_dtype(ctx, elem_type: int) -> str:
    return graphc_dtype(elem_type, f"the target type of {ctx.op_type}", fail=ctx.fail)


def cast_to(ctx, k: int, dt: str):
    kn = ctx.known(k)
    if kn is not None and kn.array.size <= 4096 and kn.array.dtype != object:
        return known_of(kn.array.astype(np.dtype(dt) if dt != "bool" else bool), dt)
    if kn is not None and kn.array.dtype == object and dt in ("int32", "int64"):
        return known_of(kn.array, dt)
    x = ctx.t(k)
    if x.dtype == dt:
        return ops.reshape(x, shape=tuple(x.shape)) if kn is None else kn
    return ops.cast(x, dtype=dt)


@onnx_op("Cast")
def cast(ctx):
    return cast_to(ctx, 0, _target_dtype(ctx, int(ctx.attr("to"))))


@onnx_op("CastLike")
def cast_like(ctx):
    return cast_to(ctx, 0, ctx.dtype(1))


def _scalar(ctx, k):
    kn = ctx.known(k)
    if kn is None:
        return None
    a = kn.array.reshape(-1)
    if a.size != 1:
        raise ctx.fail(f"input {k} must be a scalar, got shape {list(kn.array.shape)}")
    return a[0].item()


@onnx_op("Clip")
def clip(ctx):
    x = ctx.t(0)
    bounds = []
    for k in (1, 2):
        if not ctx.has(k):
            bounds.append(None)
            continue
        v = _scalar(ctx, k)
        bounds.append(v if v is not None else ctx.t(k))
    lo, hi = bounds
    if lo is None and hi is None:
        return ops.reshape(x, shape=tuple(x.shape))
    if not any(hasattr(b, "shape") for b in bounds):
        return ops.clip(x, min=lo, max=hi)
    if lo is not None:
        x = ops.maximum(x, lo if hasattr(lo, "shape") else const(ctx, lo, x.dtype))
    if hi is not None:
        x = ops.minimum(x, hi if hasattr(hi, "shape") else const(ctx, hi, x.dtype))
    return x


@onnx_op("Where")
def where(ctx):
    k = fold(ctx, np.where, ctx.dtype(1))
    if k is not None:
        return k
    c, a, b = ctx.t(0), ctx.t(1), ctx.t(2)
    return ops.where(c, *_same(ctx, a, b))


def _trunc(x):
    return ops.where(ops.less(x, const_like(x, 0)), ops.ceil(x), ops.floor(x))


def const_like(x, v):
    from .context import np_dtype
    b = x.builder
    return b.wrap(b.constant(np.asarray(v, dtype=np_dtype(x.dtype))))


@onnx_op("Mod")
def mod(ctx):
    a, b = _same(ctx, ctx.t(0), ctx.t(1))
    fmod = int(ctx.attr("fmod", 0))
    if a.dtype in FLOAT_DTYPES:
        # C fmod: a - trunc(a / b) * b, and a itself for a finite a over an infinite b
        r = ops.sub(a, ops.mul(_trunc(ops.div(a, b)), b))
        r = ops.where(ops.logical_and(ops.isinf(b), ops.logical_not(ops.isinf(a))), a, r)
        if fmod:
            return r
        zero = const(ctx, 0, a.dtype)      # Python's %: the sign of b
        fix = ops.logical_and(ops.not_equal(r, zero),
                              ops.logical_xor(ops.less(r, zero), ops.less(b, zero)))
        return ops.where(fix, ops.add(r, b), r)
    q = ops.div(a, b)                               # floors: Python's % (sign of b)
    r = ops.sub(a, ops.mul(q, b))
    if not fmod:
        return r
    # C fmod: the sign of a; differs from Python's where r != 0 and the signs differ
    zero = const(ctx, 0, a.dtype)
    fix = ops.logical_and(ops.not_equal(r, zero),
                          ops.logical_xor(ops.less(a, zero), ops.less(b, zero)))
    return ops.where(fix, ops.sub(r, b), r)


@onnx_op("Round")
def round_(ctx):
    """Half to even, as ONNX (and np.round): floor, then the tie goes to the even one."""
    x = ctx.t(0)
    if x.dtype not in FLOAT_DTYPES:
        raise ctx.fail(f"Round of a {x.dtype} tensor")
    f = ops.floor(x)
    d = ops.sub(x, f)
    half, one, two = const(ctx, 0.5, x.dtype), const(ctx, 1.0, x.dtype), const(ctx, 2.0, x.dtype)
    odd = ops.sub(f, ops.mul(ops.floor(ops.div(f, two)), two))     # 1 where f is odd
    tie = ops.add(f, odd)
    return ops.where(ops.greater(d, half), ops.add(f, one),
                     ops.where(ops.less(d, half), f, tie))
