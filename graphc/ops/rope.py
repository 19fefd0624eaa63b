"""Rotary position embedding (RoPE), interleaved-pair form as in ``transformers``.

``rope(x, positions, inv_freq, scale=s)`` rotates each pair ``(x[..., 2i], x[..., 2i+1])`` of
the last axis of ``x`` [..., S, D] by the angle ``positions[t] * inv_freq[i]``; ``cos`` and
``sin`` are multiplied by ``scale`` (YaRN's attention factor; 1 for plain RoPE). The
angle table is computed in the dtype of ``x`` (float32 like ``transformers``; the float64
oracle widens it). Positions are a tensor, so prefill (0..S-1) and decode (T) use the same op.
"""
from __future__ import annotations

import numpy as np

from ..errors import AttrError, DTypeError, ShapeError
from ..ir.types import INT_DTYPES, TensorType
from .registry import register_op, require_float, same_dtype


def _rope_infer(types, attrs):
    x, positions, inv_freq = types
    require_float(x, "rope() x")
    same_dtype([x, inv_freq], "rope() x and inv_freq")
    if positions.dtype not in INT_DTYPES:
        raise DTypeError(f"rope(): positions must be int32 or int64, got {positions.dtype}")
    if x.rank < 2:
        raise ShapeError(f"rope(): x must be [..., S, D] (rank >= 2), got {x}")
    d = x.shape[-1]
    if isinstance(d, int) and d % 2:
        raise ShapeError(f"rope(): the rotated dim {d} of {x} must be even (pairs)")
    if positions.rank != 1 or positions.shape[0] != x.shape[-2]:
        raise ShapeError(f"rope(): positions {positions} must be [S] with S = {x.shape[-2]}, "
                         f"the second-to-last dim of x {x}")
    if inv_freq.rank != 1 or 2 * inv_freq.shape[0] != d:
        raise ShapeError(f"rope(): inv_freq {inv_freq} must be [D/2] for x {x}")
    try:
        attrs["scale"] = float(attrs["scale"])
    except (TypeError, ValueError):
        raise AttrError(f"rope(): scale must be a number, got {attrs['scale']!r}") from None
    return x


@register_op("rope", kind="opaque", infer=_rope_infer)
def rope(x, positions, inv_freq, *, scale=1.0):
    """Rotate interleaved pairs of the last axis of x [..., S, D] by positions[S] * inv_freq[D/2]"""
    angle = positions.astype(x.dtype)[:, None] * inv_freq[None, :]       # [S, D/2]
    s = np.asarray(scale, x.dtype)
    cos, sin = np.cos(angle) * s, np.sin(angle) * s
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out
