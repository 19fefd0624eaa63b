"""Mixture-of-experts ops: the routed experts of a layer as one op (``moe``), and the
grouped GEMM that MoE code written with a sort by expert uses (``grouped_matmul``).

``moe(x, weights, indices, gate_up, down)``: token ``n`` goes to experts ``indices[n, k]``
with weights ``weights[n, k]``; expert ``e`` is a SwiGLU MLP whose stacked weights are in
the ``transformers`` in-memory layout: ``gate_up`` [E, 2I, H] (rows 0..I-1 the gate
projection, I..2I-1 the up projection, [out, in]) and ``down`` [E, H, I]. The result is
``sum_k weights[n, k] * down_e(silu(gate_e(x_n)) * up_e(x_n))`` for ``e = indices[n, k]``.

The op is opaque: a backend groups the tokens by expert (gather the tokens routed to ``e``,
run ``e`` on them only, scatter-add), so the work is K/E of running every expert on every
token. The router (softmax, top-k, normalisation) is ordinary graph ops in the model.

``grouped_matmul(x, w, offsets)``: rows of ``x`` [S, K] sorted by group, group ``e`` the rows
``offsets[e-1]:offsets[e]`` (``offsets`` [E] cumulative counts; group 0 starts at row 0),
each times its own matrix ``w[e]`` [K, N] (``transpose_w``: ``w`` is [E, N, K], each used
transposed, the ``nn.Linear`` layout); rows past ``offsets[E-1]`` are zero. This is what
``torch._grouped_mm`` and transformers' ``grouped_mm_fallback`` compute; the Hugging Face
MoE families (Mixtral, Qwen-MoE, OLMoE, ...) export through the latter.
"""
from __future__ import annotations

import numpy as np

from ..errors import AttrError, DTypeError, InputError, ShapeError
from ..ir.types import INT_DTYPES, TensorType
from .elementwise import _sigmoid
from .registry import register_op, require_float, same_dtype


def _moe_infer(types, attrs):
    x, weights, indices, gate_up, down = types
    require_float(x, "moe() x")
    same_dtype([x, weights, gate_up, down], "moe() x, weights and expert weights")
    if indices.dtype not in INT_DTYPES:
        raise DTypeError(f"moe(): indices must be int32 or int64, got {indices.dtype}")
    if x.rank != 2:
        raise ShapeError(f"moe(): x must be [N, H], got {x}")
    n, h = x.shape
    if weights.rank != 2 or weights.shape[0] != n or indices.shape != weights.shape:
        raise ShapeError(f"moe(): weights {weights} and indices {indices} must both be "
                         f"[N, K] with N = {n} (the rows of x {x})")
    if gate_up.rank != 3 or gate_up.shape[2] != h:
        raise ShapeError(f"moe(): gate_up {gate_up} must be [E, 2I, H] with H = {h}")
    e, two_i = gate_up.shape[0], gate_up.shape[1]
    if isinstance(two_i, int) and two_i % 2:
        raise ShapeError(f"moe(): gate_up {gate_up} must be [E, 2I, H]; {two_i} is odd")
    if down.rank != 3 or down.shape[0] != e or down.shape[1] != h \
            or 2 * down.shape[2] != two_i:
        raise ShapeError(f"moe(): down {down} must be [E, H, I] = [{e}, {h}, {two_i}/2] "
                         f"to match gate_up {gate_up}")
    if attrs["activation"] != "silu":
        raise AttrError(f"moe(): activation must be 'silu', got {attrs['activation']!r}")
    return x


@register_op("moe", kind="opaque", infer=_moe_infer)
def moe(x, weights, indices, gate_up, down, *, activation="silu"):
    """Routed SwiGLU experts: sum_k weights[n,k] * expert_{indices[n,k]}(x[n]), tokens grouped by expert"""
    n_exp, inter = gate_up.shape[0], down.shape[2]
    if indices.size and (indices.min() < 0 or indices.max() >= n_exp):
        bad = indices[(indices < 0) | (indices >= n_exp)].ravel()[0]
        raise InputError(f"moe(): expert index {int(bad)} is out of range for {n_exp} experts")
    out = np.zeros_like(x)
    flat = indices.ravel()
    # Visit only the experts some token was routed to, in expert order.
    for e in np.unique(flat):
        tok, slot = np.nonzero(indices == e)
        h = x[tok]
        gu = h @ gate_up[e].T                                  # [n_e, 2I]
        g, u = gu[:, :inter], gu[:, inter:]
        y = (g * _sigmoid(g) * u) @ down[e].T                  # [n_e, H]
        np.add.at(out, tok, y * weights[tok, slot][:, None])
    return out


def _grouped_matmul_infer(types, attrs):
    x, w, offsets = types
    require_float(x, "grouped_matmul() x")
    same_dtype([x, w], "grouped_matmul() x and w")
    if offsets.dtype not in INT_DTYPES:
        raise DTypeError(f"grouped_matmul(): offsets must be int32 or int64, got "
                         f"{offsets.dtype}")
    if not isinstance(attrs["transpose_w"], (bool, np.bool_)):
        raise AttrError(f"grouped_matmul(): transpose_w must be True or False, got "
                        f"{attrs['transpose_w']!r}")
    attrs["transpose_w"] = tw = bool(attrs["transpose_w"])
    if x.rank != 2 or w.rank != 3 or offsets.rank != 1:
        raise ShapeError(f"grouped_matmul(): x must be [S, K], w [E, {'N, K' if tw else 'K, N'}]"
                         f" and offsets [E]; got x {x}, w {w}, offsets {offsets}")
    k_w, n = (w.shape[2], w.shape[1]) if tw else (w.shape[1], w.shape[2])
    if k_w != x.shape[1] or offsets.shape[0] != w.shape[0]:
        raise ShapeError(f"grouped_matmul(): x {x}, w {w} (transpose_w={tw}) and offsets "
                         f"{offsets} do not match: x's columns must be w's K and offsets "
                         f"one per group")
    return TensorType((x.shape[0], n), x.dtype)


def grouped_bounds(offsets, rows: int) -> list:
    """(group, first row, end row) of each non-empty group; offsets that decrease or pass
    the rows are an InputError."""
    offs = np.asarray(offsets, np.int64)
    if offs.size and (np.any(np.diff(offs) < 0) or offs[0] < 0 or offs[-1] > rows):
        raise InputError(f"grouped_matmul(): offsets {offs.tolist()[:8]}"
                         f"{'...' if offs.size > 8 else ''} must be non-decreasing "
                         f"cumulative counts within the {rows} rows")
    starts = np.concatenate([[0], offs[:-1]])
    return [(int(e), int(a), int(b)) for e, (a, b) in enumerate(zip(starts, offs)) if b > a]


@register_op("grouped_matmul", kind="opaque", infer=_grouped_matmul_infer)
def grouped_matmul(x, w, offsets, *, transpose_w=False):
    """rows offsets[e-1]:offsets[e] of x times w[e] (w[e].T with transpose_w); rows past
    the last offset are zero"""
    out = np.zeros((x.shape[0], w.shape[1] if transpose_w else w.shape[2]), x.dtype)
    for e, a, b in grouped_bounds(offsets, x.shape[0]):
        out[a:b] = x[a:b] @ (w[e].T if transpose_w else w[e])
    return out
