"""Reductions over axes, and the row-wise normalisations built on them (softmax,
layernorm, rmsnorm: composite ops with a decomposition into primitives), the index
reductions (argmax, argmin) and the scan cumsum."""
from __future__ import annotations

import numpy as np

from ..errors import AttrError, DTypeError, ShapeError
from ..ir.types import TensorType
from ..lower import loopir as L
from ..lower.exprs import linearize
from .registry import norm_axes, norm_axis, register_op, require_float, same_dtype

# The names graphc.ops (and graphc) export from this module; a new op adds its name.
__all__ = ['argmax', 'argmin', 'cumsum', 'layernorm', 'max', 'mean', 'min', 'rmsnorm',
           'softmax', 'sum']

# Each op's ``lower_row(ctx)`` gives the loop-IR statements of one row (RowContext in
# graphc/lower/kernels.py); statistics accumulate in float64 (ctx.ACC), integer sums and
# maxima in int64 (a float64 total rounds past 2**53; an int32 sum wraps as NumPy's does).
ACC = "float64"


def _reduce_row(comb: str):
    def lower_row(ctx):
        whole = ctx.x.type.dtype.startswith(("int", "bool")) and ctx.node.op != "mean"
        acc = "int64" if whole else ACC
        s = ctx.reduce("total", comb, acc, lambda idx: ctx.value(0, idx, acc))
        val: L.Expr = L.Var("total")
        if ctx.node.op == "mean":
            val = L.Bin("/", val, L.Cast(ctx.n_red, ACC))
        return s + ctx.finish(ctx.out_index(), L.Cast(val, ctx.dtype))
    return lower_row


def _mean_sq(var: str, ctx, make_value) -> list:
    """``rstd = rsqrt(sum(make_value(idx)) / n + eps)``, the sum in ``var``."""
    s = ctx.reduce(var, "+", ACC, make_value)
    s.append(L.Assign("rstd", L.call("rsqrt", L.Bin(
        "+", L.Bin("/", L.Var(var), L.Cast(ctx.n_red, ACC)),
        L.Const(ctx.node.attrs["eps"], ACC))), ACC))
    return s


def layernorm_row(ctx, x_at, k_weight: int) -> list:
    """One row of a layernorm of ``x_at(idx)`` with weight and bias operands
    ``k_weight``, ``k_weight + 1`` (add_layernorm shares it)."""
    s = ctx.reduce("ssum", "+", ACC, x_at)
    s.append(L.Assign("mu", L.Bin("/", L.Var("ssum"), L.Cast(ctx.n_red, ACC)), ACC))

    def centred(idx):
        return L.Bin("-", x_at(idx), L.Var("mu"))
    s += _mean_sq("vsum", ctx, lambda i: L.Bin("*", centred(i), centred(i)))
    return s + ctx.write_row(lambda i: L.Bin("+", L.Bin("*", L.Bin(
        "*", centred(i), L.Var("rstd")), ctx.param(k_weight, i)), ctx.param(k_weight + 1, i)))


def _softmax_row(ctx):
    def shifted_exp(idx):
        return L.call("exp", L.Bin("-", ctx.value(0, idx), L.Var("m")))
    s = ctx.reduce("m", "max", ACC, lambda idx: ctx.value(0, idx))
    s += ctx.reduce("ssum", "+", ACC, shifted_exp)
    s.append(L.Assign("inv", L.Bin("/", L.Const(1.0, ACC), L.Var("ssum")), ACC))
    return s + ctx.write_row(lambda idx: L.Bin("*", shifted_exp(idx), L.Var("inv")))


def _rmsnorm_row(ctx):
    s = _mean_sq("ssum", ctx, lambda i: L.Bin("*", ctx.value(0, i), ctx.value(0, i)))
    return s + ctx.write_row(lambda i: L.Bin("*", L.Bin("*", ctx.value(0, i), L.Var("rstd")),
                                             ctx.param(1, i)))


def _reduce_infer(types, attrs):
    (x,) = types
    axes = norm_axes(attrs["axis"], x.rank)
    attrs["axis"] = axes
    attrs["keepdims"] = bool(attrs["keepdims"])
    if attrs["keepdims"]:
        shape = tuple(1 if k in axes else d for k, d in enumerate(x.shape))
    else:
        shape = tuple(d for k, d in enumerate(x.shape) if k not in axes)
    return TensorType(shape, x.dtype)


def _sum_infer(types, attrs):
    if types[0].dtype == "bool":
        raise DTypeError("sum() of a bool tensor: cast it to int32 or int64 first")
    return _reduce_infer(types, attrs)


def _mean_infer(types, attrs):
    require_float(types[0])
    return _reduce_infer(types, attrs)


@register_op("sum", kind="reduction", infer=_sum_infer, lower_row=_reduce_row("+"))
def sum(x, *, axis=None, keepdims=False):
    """np.sum: the sum over ``axis`` (all axes for None), in the input's dtype."""
    # dtype=: NumPy would widen int32 to int64; the result keeps the input's dtype.
    return np.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype)


@register_op("mean", kind="reduction", infer=_mean_infer, lower_row=_reduce_row("+"))
def mean(x, *, axis=None, keepdims=False):
    """np.mean: the mean over ``axis`` (all axes for None); float inputs only."""
    return np.mean(x, axis=axis, keepdims=keepdims)


def _nonempty(name: str, what: str):
    def infer(types, attrs):
        out = _reduce_infer(types, attrs)
        empty = [a for a in attrs["axis"] if types[0].shape[a] == 0]
        if empty:
            raise ShapeError(f"{name}(): axis {empty[0]} of {types[0]} is empty; the {what} "
                             "of nothing has no value")
        return out
    return infer


_max_infer = _nonempty("max", "max")


@register_op("max", kind="reduction", infer=_max_infer, lower_row=_reduce_row("max"))
def max(x, *, axis=None, keepdims=False):
    """np.max: the largest element over ``axis`` (all axes for None); NaN propagates."""
    return np.max(x, axis=axis, keepdims=keepdims)


@register_op("min", kind="reduction", infer=_nonempty("min", "min"),
             lower_row=_reduce_row("min"))
def min(x, *, axis=None, keepdims=False):
    """np.min: the smallest element over ``axis`` (all axes for None); NaN propagates."""
    return np.min(x, axis=axis, keepdims=keepdims)


# -- argmax / argmin -------------------------------------------------------------------

def _arg_infer(name):
    base = _nonempty(name, name)

    def infer(types, attrs):
        axis = attrs["axis"]
        if isinstance(axis, (list, tuple)):
            raise AttrError(f"{name}(): axis must be an int or None (the flattened tensor), "
                            f"got {axis!r}")
        out = base(types, attrs)
        return TensorType(out.shape, "int64")
    return infer


def _arg_row(comb: str):
    """m = the max (min) of the row, then the first index where the row equals m: a min
    reduction of (x == m ? index : n). A NaN is the max and the min of NumPy's argmax and
    argmin, and the max (min) reduction propagates it, so where m is NaN the first NaN is
    the hit (``x == m or isnan(x)``); where m is not NaN the row has none."""
    def lower_row(ctx):
        is_float = ctx.x.type.is_float
        acc = ACC if is_float else "int64"
        s = ctx.reduce("m", comb, acc, lambda idx: ctx.value(0, idx, acc))

        def position(idx):
            v = ctx.value(0, idx, acc)
            hit: L.Expr = L.Bin("==", v, L.Var("m"))
            if is_float:
                hit = L.Bin("or", hit, L.call("isnan", v))
            flat = linearize([idx[a] for a in ctx.axes], ctx.red_shape)
            return L.Select(hit, flat, ctx.n_red)
        s += ctx.reduce("at", "min", "int64", position)
        return s + ctx.finish(ctx.out_index(), L.Var("at"))
    return lower_row


@register_op("argmax", kind="reduction", infer=_arg_infer("argmax"), lower_row=_arg_row("max"))
def argmax(x, *, axis=None, keepdims=False):
    """np.argmax (int64): the index of the first largest element along ``axis`` (into the
    flattened tensor for None); a NaN counts as the largest (the first NaN's index)."""
    return np.argmax(x, axis=None if axis is None or len(axis) != 1 else axis[0],
                     keepdims=keepdims).astype(np.int64)


@register_op("argmin", kind="reduction", infer=_arg_infer("argmin"), lower_row=_arg_row("min"))
def argmin(x, *, axis=None, keepdims=False):
    """np.argmin (int64): the index of the first smallest element along ``axis``; a NaN
    counts as the smallest (the first NaN's index)."""
    return np.argmin(x, axis=None if axis is None or len(axis) != 1 else axis[0],
                     keepdims=keepdims).astype(np.int64)


# -- cumsum: a scan --------------------------------------------------------------------

def _cumsum_infer(types, attrs):
    (x,) = types
    if x.dtype == "bool":
        raise DTypeError(f"cumsum() of a bool tensor {x}: cast it to int32 or int64 first")
    if attrs["axis"] is None or isinstance(attrs["axis"], (list, tuple)):
        raise AttrError(f"cumsum(): axis must be an int (x.cumsum() flattens for none), "
                        f"got {attrs['axis']!r}")
    attrs["axis"] = norm_axis(attrs["axis"], x.rank, "cumsum() axis")
    return x


def _cumsum_row(ctx):
    """A running total along the axis, in order: an Assign carried from one element to the
    next and a store per element (not a Reduce: a renderer must not split the loop).
    Floats add in float64, ints in int64 (then wrap to int32 as NumPy's int32 sum does)."""
    acc = ACC if ctx.x.type.is_float else "int64"

    def step(j):
        full = ctx.full(j)
        return [L.Assign("run", L.Bin("+", L.Var("run"), ctx.value(0, full, acc)), acc),
                *ctx.finish(full, L.Cast(L.Var("run"), ctx.dtype))]
    return [L.Assign("run", L.Const(0.0 if acc == ACC else 0, acc), acc),
            *ctx.loops("j", step)]


@register_op("cumsum", kind="reduction", infer=_cumsum_infer, lower_row=_cumsum_row)
def cumsum(x, *, axis):
    """np.cumsum along ``axis``, keeping x's dtype (NumPy would widen int32 to int64; as
    graphc's sum, an int32 cumsum stays int32 and wraps)."""
    return np.cumsum(x, axis=axis, dtype=x.dtype)


# -- normalisations --------------------------------------------------------------------

def _softmax_infer(types, attrs):
    (x,) = types
    require_float(x)
    attrs["axis"] = norm_axis(attrs["axis"], x.rank)
    return x


def _softmax_decompose(x, *, axis):
    from . import div, exp, sub
    from . import max as max_, sum as sum_
    e = exp(sub(x, max_(x, axis=axis, keepdims=True)))
    return div(e, sum_(e, axis=axis, keepdims=True))


@register_op("softmax", kind="reduction", infer=_softmax_infer, decompose=_softmax_decompose,
             lower_row=_softmax_row)
def softmax(x, *, axis=-1):
    """exp(x - max) / sum(exp(x - max)) along ``axis``"""
    if x.size == 0:                     # nothing to normalise (np.max would raise)
        return x.copy()
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _check_eps(attrs, op):
    try:
        attrs["eps"] = float(attrs["eps"])
    except (TypeError, ValueError):
        raise AttrError(f"{op}(): eps must be a number, got {attrs['eps']!r}") from None
    if not attrs["eps"] >= 0:
        raise AttrError(f"{op}(): eps must be >= 0, got {attrs['eps']}")


def _norm_params(types, n_params, op):
    x = types[0]
    require_float(x)
    if x.rank < 1:
        raise ShapeError(f"{op}() needs a tensor of rank >= 1")
    same_dtype(types, f"{op}() input and parameters")
    for p in types[1:1 + n_params]:
        if p.shape != (x.shape[-1],):
            raise ShapeError(f"{op}(): parameter shape {p} must be [{x.shape[-1]}], the size "
                             f"of the last axis of {x}")
    return x


def _layernorm_infer(types, attrs):
    _check_eps(attrs, "layernorm")
    return _norm_params(types, 2, "layernorm")


def _layernorm_decompose(x, weight, bias, *, eps):
    from . import add, mean, mul, rsqrt, sub
    mu = mean(x, axis=-1, keepdims=True)
    xc = sub(x, mu)
    var = mean(mul(xc, xc), axis=-1, keepdims=True)
    return add(mul(mul(xc, rsqrt(add(var, eps))), weight), bias)


@register_op("layernorm", kind="reduction", infer=_layernorm_infer,
             decompose=_layernorm_decompose,
             lower_row=lambda ctx: layernorm_row(ctx, lambda i: ctx.value(0, i), 1))
def layernorm(x, weight, bias, *, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis"""
    mu = np.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return xc / np.sqrt(var + np.asarray(eps, x.dtype)) * weight + bias


def _rmsnorm_infer(types, attrs):
    _check_eps(attrs, "rmsnorm")
    return _norm_params(types, 1, "rmsnorm")


def _rmsnorm_decompose(x, weight, *, eps):
    from . import add, mean, mul, rsqrt
    ms = mean(mul(x, x), axis=-1, keepdims=True)
    return mul(mul(x, rsqrt(add(ms, eps))), weight)


@register_op("rmsnorm", kind="reduction", infer=_rmsnorm_infer, decompose=_rmsnorm_decompose,
             lower_row=_rmsnorm_row)
def rmsnorm(x, weight, *, eps=1e-6):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis"""
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(ms + np.asarray(eps, x.dtype)) * weight
