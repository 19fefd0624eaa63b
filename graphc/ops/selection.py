"""Index-dependent ops: the causal mask generator and top-k selection."""
from __future__ import annotations

import math

import numpy as np

from ..errors import AttrError, InputError, ShapeError
from ..ir.dims import as_dim
from ..ir.types import TensorType, normalize_dtype
from ..lower import loopir as L
from ..lower.exprs import dim_expr
from .registry import norm_axis, register_op, require_float

# The names graphc.ops (and graphc) export from this module; a new op adds its name.
__all__ = ['causal_mask', 'topk']


def _causal_mask_infer(types, attrs):
    try:
        rows, cols = as_dim(attrs["rows"]), as_dim(attrs["cols"])
    except (TypeError, ValueError) as e:
        raise AttrError(f"causal_mask(): {e}") from None
    for what, d in (("rows", rows), ("cols", cols)):
        if isinstance(d, int) and d < 0:
            raise AttrError(f"causal_mask(): {what} must be >= 0, got {d}")
    attrs["rows"], attrs["cols"] = rows, cols
    given = attrs["dtype"]
    try:
        attrs["dtype"] = normalize_dtype(given)
    except ValueError:
        attrs["dtype"] = None
    if attrs["dtype"] not in ("float32", "float64"):
        raise AttrError(f"causal_mask(): dtype must be float32 or float64, got {given!r}")
    if isinstance(rows, int) and isinstance(cols, int) and rows > cols:
        raise ShapeError(f"causal_mask(): {rows} query rows but only {cols} key columns; "
                         "the first rows would see no key")
    return TensorType((rows, cols), attrs["dtype"])


def _causal_mask_index(node, idx, operand):
    off = L.Bin("-", dim_expr(node.attrs["cols"]), dim_expr(node.attrs["rows"]))
    dt = node.type.dtype
    return L.Select(L.Bin(">", idx[1], L.add(idx[0], off)), L.Const(-math.inf, dt),
                    L.Const(0.0, dt))


@register_op("causal_mask", kind="elementwise", infer=_causal_mask_infer,
             lower_index=_causal_mask_index)
def causal_mask(*, rows, cols, dtype="float32"):
    """Additive mask [rows, cols]: 0 where key j <= query i + (cols - rows), -inf above.
    Queries are the last ``rows`` positions of ``cols`` keys (prefill: rows == cols;
    decode with a cache: rows = new tokens)."""
    if rows > cols:
        raise InputError(f"causal_mask(): {rows} query rows but only {cols} key columns")
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    out = np.zeros((rows, cols), dtype=dtype)
    out[j > i + (cols - rows)] = -np.inf
    return out


def _topk_infer(types, attrs):
    (x,) = types
    require_float(x)
    axis = norm_axis(attrs["axis"], x.rank)
    attrs["axis"] = axis
    k = attrs["k"]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise AttrError(f"topk(): k must be a positive int, got {k!r}")
    k = attrs["k"] = int(k)
    d = x.shape[axis]
    if isinstance(d, int) and k > d:
        raise AttrError(f"topk(): k={k} exceeds the size {d} of axis {axis} of {x}")
    if attrs["output"] not in ("values", "indices"):
        raise AttrError("topk(): output must be 'values' or 'indices'")
    shape = list(x.shape)
    shape[axis] = k
    return TensorType(tuple(shape), x.dtype if attrs["output"] == "values" else "int64")


@register_op("topk", kind="opaque", infer=_topk_infer)
def topk(x, *, k, axis=-1, output="values"):
    """The k largest entries along ``axis``, largest first; ties go to the lower index.
    One node yields either the values or the indices (``graphc.topk`` returns both)."""
    if k > x.shape[axis]:
        raise InputError(f"topk(): k={k} exceeds the size {x.shape[axis]} of axis {axis}")
    idx = np.argsort(-x, axis=axis, kind="stable")
    idx = np.take(idx, np.arange(k), axis=axis)
    if output == "indices":
        return idx.astype(np.int64)
    return np.take_along_axis(x, idx, axis=axis)
