"""Contractions: matmul with NumPy semantics (batched, broadcasting batch dims)."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.types import TensorType
from .registry import broadcast_shapes, register_op, require_float, same_dtype


def _matmul_infer(types, attrs):
    a, b = types
    dt = same_dtype(types, "matmul operands")
    require_float(a, "matmul operand")
    if a.rank == 0 or b.rank == 0:
        raise ShapeError("matmul operands must have rank >= 1 (use mul or scale for scalars)")
    ash = a.shape if a.rank > 1 else (1,) + a.shape
    bsh = b.shape if b.rank > 1 else b.shape + (1,)
    if ash[-1] != bsh[-2]:
        raise ShapeError(f"matmul inner dims differ: {a} @ {b} contracts {ash[-1]} "
                         f"with {bsh[-2]}")
    try:
        batch = broadcast_shapes(ash[:-2], bsh[:-2])
    except ShapeError as e:
        raise ShapeError(f"matmul batch dims do not broadcast: {a} @ {b} ({e.message})") \
            from None
    shape = batch + (ash[-2], bsh[-1])
    if a.rank == 1:
        shape = shape[:-2] + shape[-1:]
    if b.rank == 1:
        shape = shape[:-1]
    return TensorType(shape, dt)


@register_op("matmul", kind="contraction", infer=_matmul_infer)
def matmul(a, b):
    """a @ b with NumPy matmul semantics"""
    return np.matmul(a, b)
