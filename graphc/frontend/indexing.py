"""``tensor[index]``: NumPy basic indexing lowered to slice + reshape, and integer-array
indexing of the first axis lowered to embedding (a gather of rows)."""
from __future__ import annotations

import numpy as np

from ..errors import TraceError
from ..ir.dims import Sym
from ..ir.node import capture_loc
from .tensor import Tensor


def _is_int(v) -> bool:
    if isinstance(v, (bool, Tensor)) or (isinstance(v, np.ndarray) and v.ndim):
        return False
    return isinstance(v, Sym) or hasattr(v, "__index__")


def _is_array_index(v) -> bool:
    return isinstance(v, Tensor) or (isinstance(v, np.ndarray) and v.ndim > 0)


def getitem(t: Tensor, index):
    from .. import ops
    if _is_array_index(index):
        return ops.embedding(t, index)  # an ndarray of ids becomes a constant
    if not isinstance(index, tuple):
        index = (index,)
    if any(_is_array_index(i) for i in index):
        raise TraceError("indexing with a tensor is only supported as table[ids] "
                         "(a gather of rows); use graphc.embedding", loc=capture_loc())
    n_ell = sum(1 for i in index if i is Ellipsis)
    if n_ell > 1:
        raise TraceError("an index can only have a single ellipsis", loc=capture_loc())
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    if n_real > t.ndim:
        raise TraceError(f"too many indices ({n_real}) for a rank-{t.ndim} tensor "
                         f"{t.type}", loc=capture_loc())
    if n_ell:
        k = index.index(Ellipsis)
        index = index[:k] + (slice(None),) * (t.ndim - n_real) + index[k + 1:]
    else:
        index = index + (slice(None),) * (t.ndim - n_real)

    starts, stops, steps, out_shape_plan = [], [], [], []
    axis = 0
    for item in index:
        if item is None:
            out_shape_plan.append(("new", None))
            continue
        dim = t.shape[axis]
        if isinstance(item, slice):
            starts.append(item.start)
            stops.append(item.stop)
            steps.append(1 if item.step is None else item.step)
            out_shape_plan.append(("keep", axis))
        elif _is_int(item):
            i = item if isinstance(item, Sym) else int(item)
            if isinstance(i, int) and isinstance(dim, int) and not -dim <= i < dim:
                raise TraceError(f"index {i} is out of bounds for axis {axis} with size "
                                 f"{dim} ({t.type})", loc=capture_loc())
            start = i if not (isinstance(i, int) and i < 0) else dim + i
            starts.append(start)
            stops.append(start + 1)
            steps.append(1)
            out_shape_plan.append(("drop", axis))
        else:
            raise TraceError(f"unsupported index {item!r} of type {type(item).__name__}",
                             loc=capture_loc())
        axis += 1
    trivial = all(s is None or (isinstance(s, int) and s == 0) for s in starts) and \
        all(e is None for e in stops) and all(st == 1 for st in steps)
    out = t if trivial else ops.slice(t, starts=tuple(starts), stops=tuple(stops),
                                      steps=tuple(steps))
    if all(kind == "keep" for kind, _ in out_shape_plan):
        return out
    shape = []
    for kind, ax in out_shape_plan:
        if kind == "new":
            shape.append(1)
        elif kind == "keep":
            shape.append(out.shape[ax])
    return out.reshape(tuple(shape))
