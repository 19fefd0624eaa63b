"""Neural-network ATen ops: layer norm, scaled dot-product attention (kept whole through
the decompositions and written in the form graphc's attention rule fuses:
``softmax(scale(q @ k^T) [+ mask]) @ v``), the activations' composites."""
from __future__ import annotations

import math

import numpy as np

from ... import ops
from ...ir.types import TensorType
from ..patterns import group_normalize, per_channel
from .table import aten_op


@aten_op("native_layer_norm.default")
def layer_norm(ctx):
    x, normalized, w, b, eps = (ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3),
                                float(ctx.arg(4)))
    if len(normalized) != 1:
        raise ctx.fail(f"layer norm over the last {len(normalized)} dims (graphc normalises "
                       f"the last one)")
    n = x.shape[-1]
    np_dt = TensorType((), x.dtype).np_dtype
    if w is None:
        w = ctx.builder.wrap(ctx.builder.constant(np.ones((n,), np_dt)))
    if b is None:
        b = ctx.builder.wrap(ctx.builder.constant(np.zeros((n,), np_dt)))
    y = ops.layernorm(x, w, b, eps=eps)
    m = ops.mean(x, axis=-1, keepdims=True)
    d = ops.sub(x, m)
    rstd = ops.rsqrt(ops.add(ops.mean(ops.mul(d, d), axis=-1, keepdims=True), eps))
    return (y, m, rstd)


@aten_op("native_group_norm.default")
def group_norm(ctx):
    """GroupNorm (patterns.group_normalize), then the per-channel weight and bias; also
    the [N, G] mean and rstd that native_group_norm returns."""
    x, w, b = ctx.arg(0), ctx.arg(1), ctx.arg(2)
    G, eps = int(ctx.arg(6)), float(ctx.arg(7))
    N, C = x.shape[0], x.shape[1]
    if not isinstance(C, int) or C % G:
        raise ctx.fail(f"{G} groups of the {C} channels of {x.shape}")
    y, m, rstd = group_normalize(x, G, ctx.tensor(eps, x.dtype))
    if w is not None:
        y = ops.mul(y, per_channel(x, w))
    if b is not None:
        y = ops.add(y, per_channel(x, b))
    return (y, ops.reshape(m, shape=(N, G)), ops.reshape(rstd, shape=(N, G)))


def _sym_tensor(d):
    from ...ir.dims import Sym
    if isinstance(d, Sym):
        return ops.reshape(ops.arange(d, d + 1, dtype="int64"), shape=())
    return d


def attention(ctx, q, k, v, mask, dropout, causal, scale, gqa):
    if dropout:
        raise ctx.fail(f"dropout_p={dropout} (graphc compiles inference: dropout_p=0)")
    dt = ctx.out_dtype(0) if isinstance(ctx.val, (tuple, list)) else ctx.out_dtype()
    S, T, D = q.shape[-2], k.shape[-2], q.shape[-1]
    if scale is None:
        if not isinstance(D, int):
            raise ctx.fail(f"a symbolic head size {D}")
        scale = 1.0 / math.sqrt(D)
    Hq, Hk = (q.shape[-3], k.shape[-3]) if q.ndim >= 3 else (1, 1)
    if Hq != Hk:
        if not gqa:
            raise ctx.fail(f"{Hq} query heads and {Hk} kv heads without enable_gqa")
        if not (isinstance(Hq, int) and isinstance(Hk, int) and Hq % Hk == 0):
            raise ctx.fail(f"{Hq} query heads are not a multiple of {Hk} kv heads")
        k = ops.repeat(k, repeats=Hq // Hk, axis=-3)
        v = ops.repeat(v, repeats=Hq // Hk, axis=-3)
    axes = tuple(range(k.ndim - 2)) + (k.ndim - 1, k.ndim - 2)
    scores = ops.scale(ops.matmul(q, ops.transpose(k, axes=axes)), factor=float(scale))
    if causal:
        if S == T:
            scores = ops.add(scores, ops.causal_mask(rows=S, cols=T, dtype=dt))
        else:   # torch aligns is_causal top-left: key j <= query i
            i = ops.reshape(ops.arange(0, S, dtype="int64"), shape=(S, 1))
            j = ops.reshape(ops.arange(0, T, dtype="int64"), shape=(1, T))
            scores = ops.where(ops.less_equal(j, i), scores, float("-inf"))
    if mask is not None:
        if mask.dtype == "bool":
            scores = ops.where(mask, scores, float("-inf"))
        else:
            scores = ops.add(scores, ctx.tensor(mask, dt))
    return ops.matmul(ops.softmax(scores, axis=-1), v)


@aten_op("scaled_dot_product_attention.default")
def sdpa(ctx):
    return attention(ctx, ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3, "attn_mask"),
                     float(ctx.arg(4, "dropout_p", 0.0)), bool(ctx.arg(5, "is_causal", False)),
                     ctx.kw("scale", ctx.arg(6)), bool(ctx.kw("enable_gqa", False)))


@aten_op("_scaled_dot_product_flash_attention_for_cpu.default",
         "_scaled_dot_product_flash_attention.default")
def sdpa_flash(ctx):
    y = attention(ctx, ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.kw("attn_mask"),
                  float(ctx.arg(3, "dropout_p", 0.0)), bool(ctx.arg(4, "is_causal", False)),
                  ctx.kw("scale"), True)   # torch picks these kernels for enable_gqa too
    return (y,)          # the logsumexp output is for autograd; graphc compiles inference
