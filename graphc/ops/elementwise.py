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


def _pow_ref(a, b):
    if np.issubdtype(a.dtype, np.integer):
        # |b| keeps np.power defined; a negative power truncates toward zero (torch's
        # result, and what every kernel computes): +-1 keep their power, the rest give 0.
        p = np.power(a, np.abs(b))
        return np.where(b < 0, np.where((a == 1) | (a == -1), p, 0), p).astype(a.dtype)
    with np.errstate(all="ignore"):
        return np.power(a, b)


def _pow_lower(node, a, b):
    dt = node.type.dtype
    if not dt.startswith("int"):
        return L.binary("pow", a, b)
    zero = L.Const(0, dt)
    p = L.binary("pow", a, L.call("abs", b))
    unit = L.binary("or", L.binary("==", a, L.Const(1, dt)), L.binary("==", a, L.Const(-1, dt)))
    return L.Select(L.binary("<", b, zero), L.Select(unit, p, zero), p)


@register_op("pow", kind="elementwise", dtypes=_NUMERIC, lower=_pow_lower)
def pow_(a, b):
    """a ** b, NumPy's power: a negative base with a non-integer exponent is NaN; for
    integer tensors the integer power, where a negative exponent truncates toward zero
    as torch's does (1 and -1 keep their power, any other base gives 0)"""
    return _pow_ref(a, b)


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


@register_op("equal", kind="elementwise", out_dtype="bool", lower=binary("=="))
def equal(a, b):
    """a == b (bool)"""
    return np.equal(a, b)


@register_op("not_equal", kind="elementwise", out_dtype="bool", lower=binary("!="))
def not_equal(a, b):
    """a != b (bool)"""
    return np.not_equal(a, b)


@register_op("less_equal", kind="elementwise", out_dtype="bool", lower=binary("<="))
def less_equal(a, b):
    """a <= b (bool)"""
    return np.less_equal(a, b)


@register_op("greater_equal", kind="elementwise", out_dtype="bool", lower=binary(">="))
def greater_equal(a, b):
    """a >= b (bool)"""
    return np.greater_equal(a, b)


# -- logic on bool -----------------------------------------------------------------------

def _logic_infer(name):
    def infer(types, attrs):
        for t in types:
            if t.dtype != "bool":
                raise DTypeError(
                    f"{name}() takes bool tensors, got {t.dtype}; compare first "
                    f"(x > 0, x == y) or cast with .astype('bool') (x != 0)")
        return TensorType(broadcast_shapes(*(t.shape for t in types)), "bool")
    return infer


@register_op("logical_and", kind="elementwise", infer=_logic_infer("logical_and"),
             lower=binary("and"))
def logical_and(a, b):
    """a and b, elementwise on bool tensors (the & operator)"""
    return np.logical_and(a, b)


@register_op("logical_or", kind="elementwise", infer=_logic_infer("logical_or"),
             lower=binary("or"))
def logical_or(a, b):
    """a or b, elementwise on bool tensors (the | operator)"""
    return np.logical_or(a, b)


@register_op("logical_xor", kind="elementwise", infer=_logic_infer("logical_xor"),
             lower=binary("xor"))
def logical_xor(a, b):
    """a xor b, elementwise on bool tensors (the ^ operator)"""
    return np.logical_xor(a, b)


@register_op("logical_not", kind="elementwise", infer=_logic_infer("logical_not"),
             lower=unary("not"))
def logical_not(x):
    """not x, elementwise on a bool tensor (the ~ operator)"""
    return np.logical_not(x)


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

def unary_op(fn: str, dtypes="float", **kw):
    """Declare the unary elementwise op ``fn`` that is the loop-IR function of that name:
    ``@unary_op("exp")`` over its NumPy reference (float operands unless ``dtypes``)."""
    return register_op(fn, kind="elementwise", dtypes=dtypes, lower=unary(fn), **kw)


@unary_op("neg", _NUMERIC)
def neg(x):
    """-x"""
    return -x


@unary_op("exp")
def exp(x):
    """e ** x"""
    return np.exp(x)


@unary_op("log")
def log(x):
    """the natural logarithm"""
    return np.log(x)


@unary_op("sqrt")
def sqrt(x):
    """the square root (NaN below 0)"""
    return np.sqrt(x)


@unary_op("rsqrt")
def rsqrt(x):
    """1 / sqrt(x)"""
    return 1 / np.sqrt(x)


@unary_op("tanh")
def tanh(x):
    """the hyperbolic tangent"""
    return np.tanh(x)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@unary_op("sigmoid")
def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow for large |x|"""
    return _sigmoid(x)


_erf = np.frompyfunc(math.erf, 1, 1)


@unary_op("erf")
def erf(x):
    """the error function"""
    # asarray: on a 0-d array frompyfunc returns a Python float, not an array.
    return np.asarray(_erf(x), dtype=x.dtype)


@unary_op("sin")
def sin(x):
    """the sine (radians)"""
    return np.sin(x)


@unary_op("cos")
def cos(x):
    """the cosine (radians)"""
    return np.cos(x)


@unary_op("log1p")
def log1p(x):
    """log(1 + x), accurate for small x"""
    return np.log1p(x)


@unary_op("expm1")
def expm1(x):
    """exp(x) - 1, accurate for small x"""
    return np.expm1(x)


@unary_op("floor")
def floor(x):
    """the largest integer <= x (a float tensor)"""
    return np.floor(x)


@unary_op("ceil")
def ceil(x):
    """the smallest integer >= x (a float tensor)"""
    return np.ceil(x)


@unary_op("abs", _NUMERIC)
def abs_(x):
    """|x|"""
    return np.abs(x)


@unary_op("sign", _NUMERIC)
def sign(x):
    """-1, 0 or 1 (NaN stays NaN)"""
    return np.sign(x)


@unary_op("isnan", _NUMERIC, out_dtype="bool")
def isnan(x):
    """x is NaN (bool; always False for integer tensors)"""
    return np.isnan(x)


@unary_op("isinf", _NUMERIC, out_dtype="bool")
def isinf(x):
    """x is +inf or -inf (bool; always False for integer tensors)"""
    return np.isinf(x)


@register_op("reciprocal", kind="elementwise", dtypes="float",
             lower=lambda node, x: L.binary("/", L.Const(1.0, node.type.dtype), x))
def reciprocal(x):
    """1 / x"""
    with np.errstate(divide="ignore"):
        return np.asarray(1, x.dtype) / x


def _number_attr(attrs, key, what, allow_none=False):
    v = attrs[key]
    if v is None and allow_none:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer,
                                                              np.floating)):
        raise AttrError(f"{what}: {key} must be a Python number"
                        + (" or None" if allow_none else "") + f", got {v!r}"
                        + (" (for a tensor bound use graphc.maximum / graphc.minimum)"
                           if allow_none and hasattr(v, "shape") else ""))
    return v


def _clip_infer(types, attrs):
    (x,) = types
    if x.dtype not in _NUMERIC:
        raise DTypeError(f"clip(): dtype {x.dtype} not supported; expected one of {_NUMERIC}")
    for k in ("min", "max"):
        v = _number_attr(attrs, k, "clip()", allow_none=True)
        if v is None:
            continue
        if x.dtype.startswith("int"):
            if isinstance(v, (float, np.floating)) and not float(v).is_integer():
                raise DTypeError(f"clip(): {k}={v!r} is not an integer, for a {x.dtype} "
                                 f"tensor; cast the tensor to float first")
            info = np.iinfo(x.dtype)
            v = int(min(max(int(v), info.min), info.max))   # the same clip, in range
        else:
            v = float(v)
        attrs[k] = v
    if attrs["min"] is None and attrs["max"] is None:
        raise AttrError("clip(): give min, max or both (torch.clamp's rule)")
    return x


def _clip_lower(node, x):
    dt, lo, hi = node.type.dtype, node.attrs["min"], node.attrs["max"]
    if lo is not None:
        x = L.binary("max", x, L.Const(lo, dt))
    if hi is not None:
        x = L.binary("min", x, L.Const(hi, dt))
    return x


@register_op("clip", kind="elementwise", infer=_clip_infer, lower=_clip_lower)
def clip(x, *, min=None, max=None):
    """min(max(x, min), max) with constant bounds, either may be None (np.clip /
    torch.clamp: where min > max the result is max; NaN stays NaN)"""
    if min is not None:
        x = np.maximum(x, np.asarray(min, x.dtype))
    if max is not None:
        x = np.minimum(x, np.asarray(max, x.dtype))
    return x


def _softplus_infer(types, attrs):
    require_float(types[0])
    beta = float(_number_attr(attrs, "beta", "softplus()"))
    if beta == 0:
        raise AttrError("softplus(): beta must not be 0")
    attrs["beta"] = beta
    attrs["threshold"] = float(_number_attr(attrs, "threshold", "softplus()"))
    return types[0]


def _softplus_lower(node, x):
    dt, beta = node.type.dtype, node.attrs["beta"]
    bx = x if beta == 1.0 else L.binary("*", x, L.Const(beta, dt))
    soft = L.call("log1p", L.call("exp", bx))
    if beta != 1.0:
        soft = L.binary("/", soft, L.Const(beta, dt))
    return L.Select(L.binary(">", bx, L.Const(node.attrs["threshold"], dt)), x, soft)


@register_op("softplus", kind="elementwise", infer=_softplus_infer, lower=_softplus_lower)
def softplus(x, *, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x where beta x > threshold (torch's softplus)"""
    bx = x * np.asarray(beta, x.dtype)
    with np.errstate(over="ignore"):
        soft = np.log1p(np.exp(bx))
    if beta != 1.0:
        soft = soft / np.asarray(beta, x.dtype)
    return np.where(bx > np.asarray(threshold, x.dtype), x, soft)


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
