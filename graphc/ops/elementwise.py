"""Elementwise ops: operands broadcast NumPy-style and share one dtype."""
from __future__ import annotations

import math

import numpy as np

from ..errors import AttrError, DTypeError
from ..ir.types import TensorType, normalize_dtype
from ..lower import loopir as L
from .registry import broadcast_shapes, register_op, require_float, same_dtype


def binary(op: str):
    """``lower=`` of an op that is one loop-IR binary operator."""
    return lambda node, a, b: L.binary(op, a, b)


def unary(fn: str):
    """``lower=`` of an op that is one loop-IR function."""
    return lambda node, x: L.call(fn, x)

# -- binary arithmetic -----------------------------------------------------------------

# Arithmetic on bool is not defined (NumPy rejects - and unary -, and / gives float64).
_NUMERIC = ("float32", "float64", "int32", "int64")


@register_op("add", kind="elementwise", dtypes=_NUMERIC, lower=binary("+"))
def add(a, b):
    """a + b"""
    return a + b


@register_op("sub", kind="elementwise", dtypes=_NUMERIC, lower=binary("-"))
def sub(a, b):
    """a - b"""
    return a - b


@register_op("mul", kind="elementwise", dtypes=_NUMERIC, lower=binary("*"))
def mul(a, b):
    """a * b"""
    return a * b


def _div_ref(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return a // b
    return a / b


@register_op("div", kind="elementwise", dtypes=_NUMERIC,
             lower=lambda node, a, b: L.binary("//" if node.type.dtype.startswith("int")
                                               else "/", a, b))
def div(a, b):
    """a / b (floor division for integer tensors)"""
    return _div_ref(a, b)


@register_op("maximum", kind="elementwise", lower=binary("max"))
def maximum(a, b):
    """elementwise max(a, b)"""
    return np.maximum(a, b)


@register_op("minimum", kind="elementwise", lower=binary("min"))
def minimum(a, b):
    """elementwise min(a, b)"""
    return np.minimum(a, b)


@register_op("less", kind="elementwise", out_dtype="bool", lower=binary("<"))
def less(a, b):
    """a < b (bool)"""
    return a < b


@register_op("greater", kind="elementwise", out_dtype="bool", lower=binary(">"))
def greater(a, b):
    """a > b (bool)"""
    return a > b


def _where_infer(types, attrs):
    cond, a, b = types
    if cond.dtype != "bool":
        raise DTypeError(f"where(): the condition must be bool, got {cond.dtype}")
    dt = same_dtype([a, b], "where() branches")
    return TensorType(broadcast_shapes(cond.shape, a.shape, b.shape), dt)


@register_op("where", kind="elementwise", infer=_where_infer,
             lower=lambda node, c, a, b: L.Select(c, a, b))
def where(cond, a, b):
    """cond ? a : b"""
    return np.where(cond, a, b)


# -- unary -----------------------------------------------------------------------------


@register_op("neg", kind="elementwise", dtypes=_NUMERIC, lower=unary("neg"))
def neg(x):
    """-x"""
    return -x


@register_op("exp", kind="elementwise", dtypes="float", lower=unary("exp"))
def exp(x):
    return np.exp(x)


@register_op("log", kind="elementwise", dtypes="float", lower=unary("log"))
def log(x):
    return np.log(x)


@register_op("sqrt", kind="elementwise", dtypes="float", lower=unary("sqrt"))
def sqrt(x):
    return np.sqrt(x)


@register_op("rsqrt", kind="elementwise", dtypes="float", lower=unary("rsqrt"))
def rsqrt(x):
    """1 / sqrt(x)"""
    return 1 / np.sqrt(x)


@register_op("tanh", kind="elementwise", dtypes="float", lower=unary("tanh"))
def tanh(x):
    return np.tanh(x)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@register_op("sigmoid", kind="elementwise", dtypes="float", lower=unary("sigmoid"))
def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow for large |x|"""
    return _sigmoid(x)


_erf = np.frompyfunc(math.erf, 1, 1)


@register_op("erf", kind="elementwise", dtypes="float", lower=unary("erf"))
def erf(x):
    # asarray: on a 0-d array frompyfunc returns a Python float, not an array.
    return np.asarray(_erf(x), dtype=x.dtype)


@register_op("relu", kind="elementwise", dtypes="float",
             lower=lambda node, x: L.binary("max", x, L.Const(0.0, node.type.dtype)))
def relu(x):
    """max(x, 0)"""
    return np.maximum(x, 0)


def _gelu_decompose(x, *, approximate):
    from . import add as add_, erf as erf_, mul as mul_, scale as scale_, tanh as tanh_
    if approximate == "tanh":
        inner = scale_(add_(x, scale_(mul_(mul_(x, x), x), 0.044715)),
                       math.sqrt(2 / math.pi))
        return mul_(scale_(x, 0.5), add_(tanh_(inner), 1.0))
    return mul_(scale_(x, 0.5), add_(erf_(scale_(x, 1 / math.sqrt(2))), 1.0))


def _gelu_infer(types, attrs):
    if attrs["approximate"] not in ("none", "tanh"):
        raise AttrError(f"gelu(): approximate must be 'none' or 'tanh', "
                        f"got {attrs['approximate']!r}")
    require_float(types[0])
    return types[0]


@register_op("gelu", kind="elementwise", infer=_gelu_infer, decompose=_gelu_decompose,
             lower=lambda node, x: L.call("gelu" if node.attrs["approximate"] == "none"
                                          else "gelu_tanh", x))
def gelu(x, *, approximate="none"):
    """x * Phi(x): exact (erf) by default, the tanh approximation with approximate='tanh'"""
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return (0.5 * x * (1 + _erf(x / math.sqrt(2)))).astype(x.dtype)


def _silu_decompose(x):
    from . import mul as mul_, sigmoid as sigmoid_
    return mul_(x, sigmoid_(x))


@register_op("silu", kind="elementwise", dtypes="float", decompose=_silu_decompose,
             lower=lambda node, x: L.binary("*", x, L.call("sigmoid", x)))
def silu(x):
    """x * sigmoid(x)"""
    return x * _sigmoid(x)


def _scale_infer(types, attrs):
    require_float(types[0])
    try:
        attrs["factor"] = float(attrs["factor"])
    except (TypeError, ValueError):
        raise AttrError(f"scale(): factor must be a number, got {attrs['factor']!r}") from None
    return types[0]


@register_op("scale", kind="elementwise", infer=_scale_infer,
             lower=lambda node, x: L.binary("*", x, L.Const(node.attrs["factor"],
                                                            node.type.dtype)))
def scale(x, *, factor):
    """x * factor, with a constant Python number as factor"""
    return x * np.asarray(factor, dtype=x.dtype)


def _cast_infer(types, attrs):
    try:
        attrs["dtype"] = normalize_dtype(attrs["dtype"])
    except ValueError as e:
        raise DTypeError(f"cast(): {e}") from None
    return types[0].with_dtype(attrs["dtype"])


@register_op("cast", kind="elementwise", infer=_cast_infer,
             lower=lambda node, x: L.Cast(x, node.attrs["dtype"]))
def cast(x, *, dtype):
    """convert to another dtype"""
    return x.astype(dtype)
