"""Frontend functions that are not a single op: they expand to several nodes."""
from __future__ import annotations

import numpy as np

from ..errors import AttrError
from ..ir.node import capture_loc
from .. import ops


def constant(value, name: str | None = None):
    """Use a NumPy array as a named graph constant (a weight) inside a traced function.
    Arrays used directly become constants too; the name only makes the IR readable."""
    from ..errors import TraceError
    from .tracer import current_builder
    builder = current_builder()
    if builder is None:
        raise TraceError("graphc.constant() is only meaningful inside graphc.trace",
                         loc=capture_loc())
    if not isinstance(value, np.ndarray):
        raise TraceError(f"graphc.constant() takes a NumPy array, got {type(value).__name__}",
                         loc=capture_loc())
    return builder.wrap(builder.constant(value, name=name))


def topk(x, k: int, axis: int = -1):
    """(values, indices) of the k largest entries along ``axis``."""
    return (ops.topk(x, k=k, axis=axis, output="values"),
            ops.topk(x, k=k, axis=axis, output="indices"))


def sort(x, axis: int = -1, descending: bool = False):
    """(values, indices) of ``x`` sorted along ``axis`` (stable; torch.sort's NaN order)."""
    return (ops.sort(x, axis=axis, descending=descending, output="values"),
            ops.sort(x, axis=axis, descending=descending, output="indices"))


def split(x, sections, axis: int = 0):
    """Split along ``axis`` into ``sections`` equal parts (an int) or parts of the given
    sizes (a list), like ``torch.split`` with sizes / ``numpy.split`` with a count."""
    from ..ops.registry import norm_axis
    try:
        axis = norm_axis(axis, x.ndim)
    except Exception as e:
        raise AttrError(f"split(): {e}", loc=capture_loc()) from None
    dim = x.shape[axis]
    if isinstance(sections, np.integer):
        sections = int(sections)
    if isinstance(sections, int):
        from ..ir.dims import exact_div
        size = exact_div(dim, sections) if sections > 0 else None
        if size is None:
            raise AttrError(f"split(): axis {axis} of {x.type} ({dim}) does not divide into "
                            f"{sections} equal parts", loc=capture_loc())
        sizes = [size] * sections
    else:
        sizes = list(sections)
        total = 0
        for s in sizes:
            total = total + s
        if total != dim:
            raise AttrError(f"split(): sizes {sizes} add up to {total}, not to the size "
                            f"{dim} of axis {axis} of {x.type}", loc=capture_loc())
    out, start = [], 0
    for s in sizes:
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(start, start + s)
        out.append(x[tuple(idx)])
        start = start + s
    return out
