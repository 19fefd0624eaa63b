"""Index-dependent ops: the generators (causal_mask, arange), the triangles (triu,
tril), top-k selection, sorting and writes at indices (index_put)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import AttrError, DTypeError, InputError, ShapeError
from ..ir.dims import Sym, SymbolicSizeError, as_dim, exact_div
from ..ir.types import INT_DTYPES, TensorType, normalize_dtype
from ..lower import loopir as L
from ..lower.exprs import dim_expr
from .registry import (broadcast_shapes, broadcasts_to, norm_axis, register_op,
                       require_float)

# The names graphc.ops (and graphc) export from this module; a new op adds its name.
__all__ = ['arange', 'causal_mask', 'index_put', 'sort', 'topk', 'tril', 'triu']


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


# -- sort ------------------------------------------------------------------------------

def _sort_infer(types, attrs):
    (x,) = types
    attrs["axis"] = norm_axis(attrs["axis"], x.rank)
    if not isinstance(attrs["descending"], (bool, np.bool_)):
        raise AttrError(f"sort(): descending must be True or False, got "
                        f"{attrs['descending']!r}")
    attrs["descending"] = bool(attrs["descending"])
    if attrs["output"] not in ("values", "indices"):
        raise AttrError("sort(): output must be 'values' or 'indices'")
    return x if attrs["output"] == "values" else TensorType(x.shape, "int64")


def sort_order(x, axis, descending):
    """The stable sorting permutation of ``x`` along ``axis``: ascending with NaN last, or
    descending with NaN first (torch.sort's orders); equal entries keep their order."""
    if not descending:
        return np.argsort(x, axis=axis, kind="stable")
    if x.dtype == np.bool_:
        key = ~x
    elif x.dtype.kind in "iu":
        key = ~x                        # -x - 1: order-reversing, no overflow
    else:
        key = np.where(np.isnan(x), -np.inf, -x)
        nan = np.isnan(x)
        if nan.any():                   # NaN first: ahead of -inf (itself -(+inf))
            order = np.argsort(key, axis=axis, kind="stable")
            first = np.take_along_axis(nan, order, axis=axis)
            # stable partition of each row: the NaNs' positions first, in their order
            return np.take_along_axis(order, np.argsort(~first, axis=axis, kind="stable"),
                                      axis=axis)
    return np.argsort(key, axis=axis, kind="stable")


@register_op("sort", kind="opaque", infer=_sort_infer)
def sort(x, *, axis=-1, descending=False, output="values"):
    """x sorted along ``axis`` (stable: equal entries keep their order; NaN last ascending,
    first descending, as torch.sort); one node yields the values or the indices
    (``graphc.sort`` returns both)."""
    order = sort_order(x, axis, descending)
    if output == "indices":
        return order.astype(np.int64)
    return np.take_along_axis(x, order, axis=axis)


# -- index_put -------------------------------------------------------------------------

def _index_put_infer(types, attrs):
    x, values, *indices = types
    if not indices:
        raise ShapeError("index_put() needs at least one index tensor")
    if len(indices) > x.rank:
        raise ShapeError(f"index_put(): {len(indices)} index tensors for {x}")
    for t in indices:
        if t.dtype not in INT_DTYPES:
            raise DTypeError(f"index_put(): index tensors must be int32 or int64, got "
                             f"{t.dtype}")
    if values.dtype != x.dtype:
        raise DTypeError(f"index_put(): values ({values.dtype}) and x ({x.dtype}) differ; "
                         f"cast one explicitly")
    try:
        target = tuple(broadcast_shapes(*[t.shape for t in indices])) + \
            tuple(x.shape[len(indices):])
    except ShapeError:
        target = None
    if target is None or not broadcasts_to(values.shape, target):
        raise ShapeError(f"index_put(): index tensors {', '.join(map(str, indices))} and "
                         f"values {values} do not broadcast to the indexed part of {x}")
    if not isinstance(attrs["accumulate"], (bool, np.bool_)):
        raise AttrError(f"index_put(): accumulate must be True or False, got "
                        f"{attrs['accumulate']!r}")
    attrs["accumulate"] = bool(attrs["accumulate"])
    return x


def index_put_checked(x, indices):
    """The index tensors with negative entries counted from the end; an entry out of range
    is an InputError."""
    out = []
    for k, idx in enumerate(indices):
        n = x.shape[k]
        idx = np.asarray(idx, np.int64)
        bad = (idx < -n) | (idx >= n)
        if bad.any():
            raise InputError(f"index_put(): index {int(idx[bad].ravel()[0])} is out of "
                             f"range for axis {k} of size {n}")
        out.append(np.where(idx < 0, idx + n, idx))
    return tuple(out)


@register_op("index_put", kind="opaque", infer=_index_put_infer)
def index_put(x, values, *indices, accumulate=False):
    """A copy of x with ``x[indices] = values`` (the index tensors broadcast together and
    select along the leading axes; values broadcast to that part), or ``+=`` with
    ``accumulate`` (repeated indices add up). Without it a repeated index keeps the last
    write. torch's ``index_put`` / ``x[idx] = v``."""
    out = x.copy()
    idx = index_put_checked(x, indices)
    if accumulate:
        np.add.at(out, idx, values)
    else:
        out[idx] = values
    return out


# -- arange ----------------------------------------------------------------------------

ARANGE_DTYPES = ("int32", "int64", "float32", "float64")


def _arange_bound(v, what):
    if isinstance(v, (bool, np.bool_)) or isinstance(v, (float, np.floating)):
        raise AttrError(f"arange(): {what} must be an int or a symbolic dim (x.shape[k]), "
                        f"got {v!r}; for float values give dtype='float32'")
    try:
        return as_dim(v)
    except (TypeError, ValueError):
        raise AttrError(f"arange(): {what} must be an int or a symbolic dim (x.shape[k]), "
                        f"got {v!r}") from None


def _arange_length(start, stop, step):
    """The number of elements of arange(start, stop, step): NumPy's ceil((stop - start) /
    step), at least 0, for static bounds; for symbolic ones (stop - start) / step where
    that division is exact for every size (step 1 always is)."""
    d = stop - start
    if not isinstance(d, Sym):
        return max(0, -(-d // step))
    n = d if step == 1 else exact_div(d, step)
    if n is None:
        raise AttrError(f"arange(): with symbolic bounds (start {start}, stop {stop}) the "
                        f"step must be 1 or divide stop - start = {d} for every size; "
                        f"step {step} does not (slice an arange with step 1 instead, e.g. "
                        f"arange(n)[::{step}], or give static bounds)")
    try:
        negative = n < 0 if isinstance(n, int) else not (n >= 0)
    except SymbolicSizeError:
        negative = False        # depends on the sizes: checked at call time
    if negative:
        raise AttrError(f"arange(): length (stop - start) / step = {n} is negative for "
                        "every size")
    return n


def _arange_infer(types, attrs):
    if types:
        raise AttrError(f"arange() takes no tensor operands, got {len(types)}")
    start = _arange_bound(attrs["start"], "start")
    stop = _arange_bound(attrs["stop"], "stop")
    step = attrs["step"]
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
        raise AttrError(f"arange(): step must be a non-zero int, got {step!r}")
    step = int(step)
    if step == 0:
        raise AttrError("arange(): step must be a non-zero int, got 0")
    given = attrs["dtype"]
    try:
        dt = normalize_dtype(given)
    except (ValueError, TypeError):
        dt = None
    if dt not in ARANGE_DTYPES:
        raise AttrError(f"arange(): dtype must be one of {', '.join(ARANGE_DTYPES)}, "
                        f"got {given!r}")
    attrs.update(start=start, stop=stop, step=step, dtype=dt)
    return TensorType((_arange_length(start, stop, step),), dt)


def _arange_index(node, idx, operand):
    a = node.attrs
    v = L.add(dim_expr(a["start"]), L.mul(idx[0], L.c(a["step"])))
    return L.Cast(v, node.type.dtype)


@register_op("arange", kind="elementwise", infer=_arange_infer, lower_index=_arange_index)
def _arange(*, start, stop, step=1, dtype="int64"):
    """[start, start + step, ...) up to stop (exclusive), as np.arange."""
    return np.arange(start, stop, step, dtype=dtype)


def arange(start_or_n, stop=None, step=1, *, dtype="int64"):
    """``arange(n)`` or ``arange(start, stop, step=1)``: np.arange / torch.arange of ints
    (``dtype`` int64 by default; int32, float32 and float64 too). The bounds may be
    symbolic dims (``graphc.arange(x.shape[1])`` in a traced function: positions 0..S-1);
    with symbolic bounds the step must divide ``stop - start`` exactly (1, or 2 for
    ``arange(0, 2 * S, 2)``), and a length that is negative for the call's sizes is an
    error at call time. Outside a trace it returns a NumPy array."""
    if stop is None:
        start, stop = 0, start_or_n
    else:
        start = start_or_n
    return _arange(start=start, stop=stop, step=step, dtype=dtype)


# -- triu / tril -----------------------------------------------------------------------

def _tri_infer(name):
    def infer(types, attrs):
        (x,) = types
        if x.rank < 2:
            raise ShapeError(f"{name}(): needs a tensor of rank >= 2 (the last two axes are "
                             f"the matrix), got {x}")
        k = attrs["k"]
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer, Sym)):
            raise AttrError(f"{name}(): the diagonal k must be an int (or a symbolic dim), "
                            f"got {k!r}")
        attrs["k"] = k if isinstance(k, Sym) else int(k)
        return x
    return infer


def _tri_index(keep_upper: bool):
    def lower_index(node, idx, operand):
        i, j = idx[-2], idx[-1]
        edge = L.add(i, dim_expr(node.attrs["k"]))
        keep = L.Bin(">=" if keep_upper else "<=", j, edge)
        dt = node.type.dtype
        zero = L.Const(False if dt == "bool" else 0 if dt.startswith("int") else 0.0, dt)
        return L.Select(keep, operand(0, idx), zero)
    return lower_index


@register_op("triu", kind="elementwise", infer=_tri_infer("triu"), lower_index=_tri_index(True))
def triu(x, *, k=0):
    """np.triu on the last two axes (any leading batch axes, any dtype): the elements on
    and above diagonal ``k`` (column - row >= k) kept, the rest zero (False)."""
    return np.triu(x, k)


@register_op("tril", kind="elementwise", infer=_tri_infer("tril"), lower_index=_tri_index(False))
def tril(x, *, k=0):
    """np.tril on the last two axes: the elements on and below diagonal ``k`` (column -
    row <= k) kept, the rest zero (False)."""
    return np.tril(x, k)
