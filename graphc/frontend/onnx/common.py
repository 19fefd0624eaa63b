"""Helpers the op families share."""
from __future__ import annotations

import numpy as np

from ...errors import TraceError
from ...ir.dims import Sym, exact_div
from ... import ops
from .context import Known, known_of, np_dtype


def const(ctx, value, dtype: str):
    """A constant tensor of ``dtype`` (scalars are 0-d)."""
    b = ctx.values.builder
    return b.wrap(b.constant(np.asarray(value, dtype=np_dtype(dtype))))


def axis_of(ctx, axis, rank: int, what: str = "axis") -> int:
    if not isinstance(axis, (int, np.integer)) or not -rank <= int(axis) < max(rank, 1):
        raise ctx.fail(f"{what} {axis!r} is out of range for a rank-{rank} input")
    return int(axis) % rank if rank else 0


def axes_of(ctx, axes, rank: int) -> list:
    out = sorted({axis_of(ctx, int(a), rank, "axis") for a in axes})
    if len(out) != len(list(axes)):
        raise ctx.fail(f"repeated axis in {list(axes)}")
    return out


def fold(ctx, fn, dtype: str, ks=None):
    """``fn(*known arrays)`` at import when every input is small and known, else None
    (including when a symbolic dim makes the answer depend on the call)."""
    if not ctx.small_known(ks):
        return None
    ks = list(range(ctx.n_in)) if ks is None else ks
    arrays = [ctx.known(k).array if ctx.has(k) else None for k in ks]
    try:
        with np.errstate(all="ignore"):
            out = fn(*arrays)
        return known_of(np.asarray(out) if not isinstance(out, np.ndarray) else out, dtype)
    except (TraceError, TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None


def int_div(a, b):
    """ONNX's integer division (truncates toward zero) on ints and symbolic dims."""
    def one(x, y):
        if isinstance(x, Sym) or isinstance(y, Sym):
            q = exact_div(x, y)
            if q is None:
                raise ValueError("inexact symbolic division")
            return q
        x, y = int(x), int(y)
        q = abs(x) // abs(y)
        return q if (x >= 0) == (y >= 0) else -q
    return np.frompyfunc(one, 2, 1)(a, b)


def dims_tuple(arr) -> tuple:
    return tuple(x if isinstance(x, Sym) else int(x) for x in np.asarray(arr).reshape(-1))


def as_tensor_dtype(x, dtype: str):
    return x if x.dtype == dtype else ops.cast(x, dtype=dtype)


def is_known(v) -> bool:
    return isinstance(v, Known)
