"""ONNX Attention (opsets 23-24): scaled dot-product attention with an optional mask,
past key / value cache, grouped-query heads, causal and sliding-window masks, softcap
and the qk_matmul output, decomposed into graphc ops (matmul, softmax, where...), the
form graphc's attention pattern rule matches where it applies."""
from __future__ import annotations

import math


from ... import ops
from ...ir.dims import exact_div
from ...ir.types import FLOAT_DTYPES
from .common import const
from .table import onnx_op


def _to4d(ctx, x, heads, what):
    B, S, hidden = x.shape
    if not heads:
        raise ctx.fail(f"3-D {what} needs the {'q' if what == 'Q' else 'kv'}_num_heads "
                       f"attribute")
    d = exact_div(hidden, heads)
    if d is None:
        raise ctx.fail(f"{what} hidden size {hidden} is not a multiple of {heads} heads")
    return ops.transpose(ops.reshape(x, shape=(B, S, heads, d)), axes=(0, 2, 1, 3))


def _bias_of(ctx, allowed, dt):
    return ops.where(allowed, const(ctx, 0.0, dt), const(ctx, -math.inf, dt))


@onnx_op("Attention")
def attention(ctx):
    q, k, v = ctx.t(0), ctx.t(1), ctx.t(2)
    dt = q.dtype
    if dt not in FLOAT_DTYPES:
        raise ctx.fail(f"{dt} inputs")
    three_d = q.ndim == 3
    if three_d:
        q = _to4d(ctx, q, int(ctx.attr("q_num_heads", 0)), "Q")
        k = _to4d(ctx, k, int(ctx.attr("kv_num_heads", 0)), "K")
        v = _to4d(ctx, v, int(ctx.attr("kv_num_heads", 0)), "V")
    elif q.ndim != 4:
        raise ctx.fail(f"Q of rank {q.ndim} (3 or 4)")
    past = ctx.has(4)
    P = 0
    if past:
        P = ctx.t(4).shape[2]
        k = ops.concat(ctx.t(4), k, axis=2)
        v = ops.concat(ctx.t(5), v, axis=2)
    present_k, present_v = k, v
    B, Hq, S, D = q.shape
    T = k.shape[2]
    scale = ctx.attr("scale")
    scale = 1 / math.sqrt(D) if scale is None else float(scale)
    root = math.sqrt(scale)
    softcap = float(ctx.attr("softcap", 0.0) or 0.0)
    mode = int(ctx.attr("qk_matmul_output_mode", 0))
    causal = int(ctx.attr("is_causal", 0))
    left = int(ctx.attr("left_window_size", -1))
    right = int(ctx.attr("right_window_size", -1))
    nonpad = ctx.t(6) if ctx.has(6) else None
    if nonpad is not None and past:
        raise ctx.fail("nonpad_kv_seqlen together with a past cache")

    # -- the additive bias [.., S, T] -----------------------------------------------------
    bias = None
    if ctx.has(3):
        mask = ctx.t(3)
        tm = mask.shape[-1]
        if tm != T:
            pad = T - tm
            if not isinstance(pad, int) or pad < 0:
                raise ctx.fail(f"mask of {tm} keys for {T} keys")
            fill = False if mask.dtype == "bool" else -math.inf
            pshape = tuple(mask.shape[:-1]) + (pad,)
            mask = ops.concat(mask, ops.broadcast_to(const(ctx, fill, mask.dtype),
                                                     shape=pshape), axis=-1)
        bias = _bias_of(ctx, mask, dt) if mask.dtype == "bool" else mask
    i_idx = ops.reshape(ops.arange(0, S, dtype="int64"), shape=(S, 1))
    j_idx = ops.reshape(ops.arange(0, T, dtype="int64"), shape=(1, T))
    if nonpad is not None:
        offset = ops.sub(ops.reshape(ops.cast(nonpad, dtype="int64"), shape=(B, 1, 1, 1)),
                         _dim(ctx, S))
    else:
        offset = _dim(ctx, P)
    frontier = ops.add(i_idx, offset)                   # [S, 1] or [B, 1, S, 1]
    allowed = None
    if causal:
        allowed = ops.less_equal(j_idx, frontier)
    if left >= 0 or right >= 0:
        diff = ops.sub(frontier, j_idx)
        for lim, d in ((left, diff), (right, ops.neg(diff))):
            if lim >= 0:
                a = ops.less_equal(d, const(ctx, lim, "int64"))
                allowed = a if allowed is None else ops.logical_and(allowed, a)
    if allowed is not None:
        extra = _bias_of(ctx, allowed, dt)
        bias = extra if bias is None else ops.add(bias, extra)
    if nonpad is not None:
        lens = ops.reshape(ops.cast(nonpad, dtype="int64"), shape=(B, 1, 1, 1))
        pad_ok = ops.less(ops.reshape(j_idx, shape=(1, 1, 1, T)), lens)
        extra = _bias_of(ctx, pad_ok, dt)
        bias = extra if bias is None else ops.add(bias, extra)

    # -- heads: a kv head serves a group of query heads ------------------------------------
    Hk = k.shape[1]
    if Hk != Hq:
        g = exact_div(Hq, Hk)
        if g is None:
            raise ctx.fail(f"{Hq} query heads are not a multiple of {Hk} kv heads")
        k = ops.repeat(k, repeats=int(g), axis=1)
        v = ops.repeat(v, repeats=int(g), axis=1)
    r = const(ctx, root, dt)
    scores = ops.matmul(ops.mul(q, r), ops.transpose(ops.mul(k, r), axes=(0, 1, 3, 2)))
    if softcap > 0:
        c = const(ctx, softcap, dt)
        scores = ops.mul(ops.tanh(ops.div(scores, c)), c)
    qk_out = scores
    with_bias = scores if bias is None else ops.add(scores, bias)
    if mode == 2:
        qk_out = with_bias
    probs = ops.softmax(with_bias, axis=-1)
    if bias is not None:
        # a row every key of which is masked gives zeros (ONNX), not 0/0: the NaN guard
        # torch's SDPA decomposition writes too, the form the attention rule fuses
        probs = ops.where(ops.isnan(probs), const(ctx, 0.0, dt), probs)
    if mode == 3:
        qk_out = probs
    y = ops.matmul(probs, v)
    if three_d:
        y = ops.transpose(y, axes=(0, 2, 1, 3))
        y = ops.reshape(y, shape=(y.shape[0], y.shape[1], y.shape[2] * y.shape[3]))
    return [y, present_k, present_v, qk_out]


def _dim(ctx, d):
    """A 0-d int64 tensor holding the dim ``d`` (an int or a symbol)."""
    if isinstance(d, int):
        return const(ctx, d, "int64")
    return ops.reshape(ops.arange(d, d + 1, dtype="int64"), shape=())
