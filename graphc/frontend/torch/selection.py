"""Sorting, selection and the grouped GEMM of mixture-of-experts code: sort, topk, histc,
index_put, and transformers' ``grouped_mm_fallback`` (which the
Hugging Face MoE families export through: sort the (token, expert) pairs by expert,
count them with histc, cumsum the counts into offsets, one GEMM per expert, put the rows
back in order with index_put)."""
from __future__ import annotations

import numpy as np

from ... import ops
from .movement import norm_axis
from .table import aten_op


@aten_op("sort.default", "sort.stable")
def sort(ctx):
    x = ctx.arg(0)
    if ctx.op == "aten.sort.stable":
        dim, desc = ctx.kw("dim", -1), ctx.kw("descending", False)
    else:
        dim, desc = ctx.arg(1, "dim", -1), ctx.arg(2, "descending", False)
    ax = norm_axis(ctx, dim, x.ndim)
    return (ops.sort(x, axis=ax, descending=bool(desc), output="values"),
            ops.sort(x, axis=ax, descending=bool(desc), output="indices"))


@aten_op("topk.default")
def topk(ctx):
    x, k = ctx.arg(0), ctx.arg(1, "k")
    ax = norm_axis(ctx, ctx.arg(2, "dim", -1), x.ndim)
    largest = ctx.arg(3, "largest", True)
    if not isinstance(k, int):
        raise ctx.fail(f"topk with a symbolic k ({k}); graphc's topk takes a fixed k")
    if x.dtype not in ("float32", "float64"):
        raise ctx.fail(f"topk of a {x.dtype} tensor (graphc's topk ranks floats)")
    key = x if largest else ops.neg(x)
    values = ops.topk(key, k=k, axis=ax, output="values")
    return (values if largest else ops.neg(values),
            ops.topk(key, k=k, axis=ax, output="indices"))


@aten_op("histc.default")
def histc(ctx):
    """torch.histc with fixed bounds as comparisons and a sum: bin floor((x - min) *
    bins / (max - min)), x == max in the last bin, values outside ignored. (The numba
    and cupy kernels may reassociate that product, so a value within an ulp of a bin
    edge can land in the neighbouring bin there; integer ids, as MoE code counts, are
    exact.)"""
    x = ctx.arg(0)
    bins, lo, hi = (ctx.arg(1, "bins", 100), ctx.arg(2, "min", 0), ctx.arg(3, "max", 0))
    if lo == hi:
        raise ctx.fail("histc with min == max takes its range from the data; give fixed "
                       "bounds (min < max)")
    if lo > hi:
        raise ctx.fail(f"histc with min {lo} > max {hi}")
    dt = x.dtype
    flat = ops.reshape(x, shape=(-1,)) if x.ndim != 1 else x
    # torch's order of operations, in x's dtype: (x - min) * bins / (max - min), the
    # bounds rounded to that dtype first (so a value at a bin edge lands where torch's)
    np_dt = np.float32 if dt == "float32" else np.float64
    lo_d, hi_d = np_dt(lo), np_dt(hi)
    b = ops.floor(ops.div(ops.mul(ops.sub(flat, float(lo_d)), float(int(bins))),
                          float(hi_d - lo_d)))
    b = ops.minimum(b, float(int(bins) - 1))                 # x == max: the last bin
    inside = ops.logical_and(ops.greater_equal(flat, float(lo_d)),
                             ops.less_equal(flat, float(hi_d)))
    b = ops.where(inside, b, -1.0)                           # outside: no bin
    edges = ops.cast(ops.arange(0, int(bins), dtype="int64"), dtype=dt)
    hits = ops.equal(ops.reshape(b, shape=(-1, 1)), ops.reshape(edges, shape=(1, -1)))
    return ops.sum(ops.cast(hits, dtype=dt), axis=0)


@aten_op("index_put.default", "index_put_.default")
def index_put(ctx):
    x, indices, values = ctx.arg(0), list(ctx.arg(1)), ctx.arg(2)
    accumulate = bool(ctx.arg(3, "accumulate", False))
    if any(t is None for t in indices):
        raise ctx.fail("index_put with a None (a full slice) among the index tensors; "
                       "graphc's index_put indexes the leading axes")
    if any(t.dtype == "bool" for t in indices):
        raise ctx.fail("index_put with a bool mask (use torch.where)")
    values = ctx.tensor(values, x.dtype)
    return ops.index_put(x, values, *indices, accumulate=accumulate)


@aten_op("transformers.grouped_mm_fallback.default")
def grouped_mm(ctx):
    """The float32 path of transformers' grouped experts (``torch._grouped_mm`` itself
    exports for bfloat16 only, which graphc does not compute in)."""
    x, w, offs = ctx.arg(0), ctx.arg(1), ctx.arg(2, "offs")
    if x.ndim != 2 or w.ndim != 3:
        raise ctx.fail(f"grouped GEMM of x {list(x.shape)} and w {list(w.shape)} (graphc's "
                       f"grouped_matmul takes x [S, K] and w [E, K, N])")
    if x.dtype != w.dtype:
        x = ops.cast(x, dtype=w.dtype)
    node = w.node
    if node.op == "transpose" and tuple(node.attrs["axes"]) == (0, 2, 1):
        # w[e].T of the stacked [E, N, K] weights: read them in place
        return ops.grouped_matmul(x, w.builder.wrap(node.inputs[0]), offs,
                                  transpose_w=True)
    return ops.grouped_matmul(x, w, offs)
