"""Rotary position embedding (RoPE) in both layouts of ``transformers``, with shared or
per-sequence positions and partial rotary.

``rope(x, positions, inv_freq, scale=s, layout=..., rotary_dim=r)`` rotates pairs of the
first ``r`` dims of the last axis of ``x`` [..., S, D] (``r`` = ``rotary_dim``, default D;
even, <= D; dims ``r..D`` pass through unchanged, as Phi-3 / GPT-NeoX
``partial_rotary_factor`` and GPT-J ``rotary_dim``). Pair ``i`` (``i < r/2``) turns by
the angle ``positions[..., t] * inv_freq[i]``; ``cos`` and ``sin`` are multiplied by
``scale`` (YaRN's attention factor; 1 for plain RoPE). ``inv_freq`` is [r/2].

- ``layout="interleaved"`` (the default; GPT-J's ``rotate_every_two``): pair ``i`` is
  ``(x[2i], x[2i+1])``, rotated in place. DeepSeek-V2's ``apply_rotary_pos_emb``
  de-interleaves first, so its output is this one with the dims reordered (pairs'
  first elements, then their second ones): the same q . k.
- ``layout="half"`` (rotate-half / NeoX; Llama, Qwen2, Mistral, Phi-3, GPT-NeoX): pair
  ``i`` is ``(x[i], x[i + r/2])``, i.e. ``x * cos + rotate_half(x) * sin`` with
  ``cos = cat(cos(freqs), cos(freqs))``.

Positions are [S] (one row shared by every leading index) or [B, S] (one row per
sequence: left-padded batches, batched generation), where B is the *first* dim of ``x``
and S its second-to-last: ``x`` [B, ..., S, D], e.g. [B, H, S, D] as ``transformers``
applies RoPE (``cos[:, None]`` against q [B, H, S, D]) or [B, S, D]. [1, S] broadcasts
over B. A [B, S, H, D] tensor is transposed to [B, H, S, D] first.

The angle table is computed in the dtype of ``x`` (float32 like ``transformers``; the
float64 oracle widens it). Positions are a tensor, so prefill (0..S-1) and decode (T) use
the same op.
"""
from __future__ import annotations

import numpy as np

from ..errors import AttrError, DTypeError, ShapeError
from ..ir.types import INT_DTYPES
from .registry import register_op, require_float, same_dtype

LAYOUTS = ("interleaved", "half")


def _rope_infer(types, attrs):
    x, positions, inv_freq = types
    require_float(x, "rope() x")
    same_dtype([x, inv_freq], "rope() x and inv_freq")
    if positions.dtype not in INT_DTYPES:
        raise DTypeError(f"rope(): positions must be int32 or int64, got {positions.dtype}")
    try:
        attrs["scale"] = float(attrs["scale"])
    except (TypeError, ValueError):
        raise AttrError(f"rope(): scale must be a number, got {attrs['scale']!r}") from None
    if attrs["layout"] not in LAYOUTS:
        raise AttrError(f"rope(): layout must be one of {LAYOUTS} (interleaved pairs "
                        f"(x[2i], x[2i+1]) or rotate-half pairs (x[i], x[i+r/2])), got "
                        f"{attrs['layout']!r}")
    if x.rank < 2:
        raise ShapeError(f"rope(): x must be [..., S, D] (rank >= 2), got {x}")
    d = x.shape[-1]
    r = attrs["rotary_dim"]
    if r is None:
        if isinstance(d, int) and d % 2:
            raise ShapeError(f"rope(): the rotated dim {d} of {x} must be even (pairs); "
                             "rotary_dim= rotates only the first (even) dims")
        if isinstance(d, int):
            attrs["rotary_dim"] = r = d
    else:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise AttrError(f"rope(): rotary_dim must be an int, got {r!r}")
        r = attrs["rotary_dim"] = int(r)
        if r <= 0 or r % 2:
            raise AttrError(f"rope(): rotary_dim {r} must be positive and even (pairs)")
        if isinstance(d, int) and r > d:
            raise AttrError(f"rope(): rotary_dim {r} is larger than the last dim {d} of "
                            f"x {x}")
        if not isinstance(d, int):
            raise ShapeError(f"rope(): rotary_dim {r} needs a fixed last dim of x, got {x}")
    want = d if r is None else r
    if inv_freq.rank != 1 or 2 * inv_freq.shape[0] != want:
        what = "D/2" if attrs["rotary_dim"] in (None, d) else "rotary_dim/2"
        raise ShapeError(f"rope(): inv_freq {inv_freq} must be [{what}] = "
                         f"[{want // 2 if isinstance(want, int) else want}] for x {x}"
                         + ("" if what == "D/2" else f" with rotary_dim {r}"))
    S = x.shape[-2]
    if positions.rank == 1:
        if positions.shape[0] != S:
            raise ShapeError(f"rope(): positions {positions} must be [S] with S = {S}, "
                             f"the second-to-last dim of x {x} (or [B, S])")
    elif positions.rank == 2:
        if x.rank < 3:
            raise ShapeError(f"rope(): positions {positions} of shape [B, S] need x "
                             f"[B, ..., S, D] (rank >= 3), got x {x}; use positions [S]")
        B = x.shape[0]
        if positions.shape[1] != S or positions.shape[0] not in (1, B):
            raise ShapeError(f"rope(): positions {positions} must be [B, S] (or [1, S]) "
                             f"with B = {B}, the first dim of x {x}, and S = {S}, its "
                             "second-to-last")
    else:
        raise ShapeError(f"rope(): positions {positions} must be [S] or [B, S] for x {x}")
    return x


@register_op("rope", kind="opaque", infer=_rope_infer)
def rope(x, positions, inv_freq, *, scale=1.0, layout="interleaved", rotary_dim=None):
    """Rotate pairs of the first rotary_dim dims of x [..., S, D] (interleaved (2i, 2i+1)
    or rotate-half (i, i + r/2)) by positions[S] or [B, S] times inv_freq[r/2]"""
    r = x.shape[-1] if rotary_dim is None else int(rotary_dim)
    h = r // 2
    angle = positions.astype(x.dtype)[..., None] * inv_freq              # [(B,) S, h]
    if positions.ndim == 2:                                              # [B, 1.., S, h]
        angle = angle.reshape(angle.shape[:1] + (1,) * (x.ndim - 3) + angle.shape[1:])
    s = np.asarray(scale, x.dtype)
    cos, sin = np.cos(angle) * s, np.sin(angle) * s
    if layout == "half":
        i0, i1 = slice(0, h), slice(h, r)
    else:
        i0, i1 = slice(0, r, 2), slice(1, r, 2)
    x0, x1 = x[..., i0], x[..., i1]
    out = np.array(x, copy=True)                                          # dims r.. pass
    out[..., i0] = x0 * cos - x1 * sin
    out[..., i1] = x0 * sin + x1 * cos
    return out
