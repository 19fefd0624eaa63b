"""Graph-building helpers the torch and ONNX importers share: constant padding of one axis,
a convolution written as one GEMM over gathered taps, group normalisation."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..ir.dims import prod


def pad_axis(x, axis: int, before, after, value):
    """``x`` with ``before`` / ``after`` entries of ``value`` (a 0-d tensor of x's dtype)
    added on either side of ``axis``; a negative amount crops instead. A concat with
    filled blocks, a slice for crops."""
    for amount, at_end in ((before, False), (after, True)):
        if isinstance(amount, int) and amount < 0:      # crop
            starts, stops = [0] * x.ndim, list(x.shape)
            if at_end:
                stops[axis] = x.shape[axis] + amount
            else:
                starts[axis] = -amount
            x = ops.slice(x, starts=tuple(starts), stops=tuple(stops), steps=(1,) * x.ndim)
        elif not (isinstance(amount, int) and amount == 0):
            shape = list(x.shape)
            shape[axis] = amount
            block = ops.broadcast_to(value, shape=tuple(shape))
            x = ops.concat(x, block, axis=axis) if at_end else ops.concat(block, x, axis=axis)
    return x


def conv_gemm(x, w, bias, stride, pad_before, pad_after, dilation, outs, zero, groups=1):
    """A convolution as a GEMM: x [B, C, *spatial], w [O, C / groups, *kernel], bias
    [O] or None; per spatial dim its stride, zero padding before / after, dilation and
    output size (``outs``). The input goes channels-last, the kernel's taps are read from
    the zero-padded input (``zero()``: a 0-d tensor of x's dtype) along the channels
    (im2col: _im2col), times the weight as [taps * C, O]; a patch embedding
    (stride == kernel, no padding, sizes that divide) is a reshape instead. The bias is
    added and the channels moved back: [B, O, *outs].

    Grouped (``groups`` g > 1; the caller checks that g divides C and O): a depthwise
    one (one input and one output channel a group) is, per channel, the sum over the
    taps of column times weight (one reduction); any other is one batched GEMM with the
    groups as its batch, [g, B * outs, taps * C/g] @ [g, taps * C/g, O/g]."""
    nd = w.ndim - 2
    O, C = w.shape[0], w.shape[1] * groups
    kernel = list(w.shape[2:])
    B = x.shape[0]
    # channels last: [B, *spatial, C]
    xt = ops.transpose(x, axes=(0,) + tuple(range(2, 2 + nd)) + (1,))
    spatial = list(xt.shape[1:1 + nd])
    unpadded = all(isinstance(p, int) and p == 0 for p in list(pad_before) + list(pad_after))
    patch = (groups == 1 and list(stride) == kernel and unpadded and all(d == 1 for d in dilation)
             and all(isinstance(s, int) and isinstance(k, int) and s % k == 0
                     for s, k in zip(spatial, kernel)))
    if patch:
        # [B, n1, k1, n2, k2, .., C] -> [B, n1, n2, .., C, k1, k2, ..]: the taps in the
        # weight's (C, k1, k2, ..) order
        split = [B]
        for s, k in zip(spatial, kernel):
            split += [s // k, k]
        cols = ops.reshape(xt, shape=tuple(split) + (C,))
        perm = (0,) + tuple(1 + 2 * i for i in range(nd)) + (1 + 2 * nd,) + \
            tuple(2 + 2 * i for i in range(nd))
        cols = ops.transpose(cols, axes=perm)
        cols = ops.reshape(cols, shape=(B,) + tuple(outs) + (C * prod(kernel),))
        wmat = ops.reshape(w, shape=(O, C * prod(kernel)))
    else:
        for a, (p0, p1) in enumerate(zip(pad_before, pad_after)):
            xt = pad_axis(xt, 1 + a, p0, p1, zero())
        cols = _im2col(xt, kernel, stride, dilation, outs)      # [B, *outs, taps * C]
        if groups == 1:
            # weight [O, C, k1, ..] -> [O, taps, C]: the columns' (tap, channel) order
            wmat = ops.transpose(w, axes=(0,) + tuple(range(2, 2 + nd)) + (1,))
            wmat = ops.reshape(wmat, shape=(O, prod(kernel) * C))
    y = (ops.matmul(cols, ops.transpose(wmat, axes=(1, 0))) if groups == 1
         else _grouped(cols, w, groups, B, outs))
    if bias is not None:
        y = ops.add(y, bias)
    return ops.transpose(y, axes=(0, nd + 1) + tuple(range(1, nd + 1)))


GATHER_TAPS = 5     # kernels of more taps than this over static sizes: one gather


def _im2col(xt, kernel, stride, dilation, outs):
    """The columns of a convolution: xt [B, *padded, C] channels-last -> [B, *outs,
    taps * C], taps in the weight's (k1, k2, ..) order, channels inner. A few taps are
    strided slices concatenated; many over static sizes one take_along_axis of the
    flattened positions by a constant index (small code whatever the kernel: a 7x7
    depthwise conv as 49 slices made one kernel of 49 inputs that LLVM took minutes on)."""
    nd = len(kernel)
    B, C = xt.shape[0], xt.shape[-1]
    padded = list(xt.shape[1:1 + nd])
    taps = [()]
    for k in kernel:
        taps = [t + (i,) for t in taps for i in range(k)]
    static = all(isinstance(d, int) for d in padded + list(outs))
    if static and len(taps) > GATHER_TAPS:
        grids = np.meshgrid(*[np.arange(o) * s for o, s in zip(outs, stride)], indexing="ij")
        flat = np.zeros(tuple(outs) + (len(taps),), np.int64)
        for j, t in enumerate(taps):
            pos = 0
            for a in range(nd):
                pos = pos * padded[a] + grids[a] + t[a] * dilation[a]
            flat[..., j] = pos
        xf = ops.reshape(xt, shape=(B, prod(padded), C))
        index = flat.reshape(1, -1, 1)
        cols = ops.take_along_axis(xf, index, axis=1)              # [B, outs * taps, C]
        return ops.reshape(cols, shape=(B,) + tuple(outs) + (len(taps) * C,))
    pieces = []
    for t in taps:
        starts, stops, steps = [0] * (nd + 2), list(xt.shape), [1] * (nd + 2)
        for a in range(nd):
            s0 = t[a] * dilation[a]
            starts[1 + a] = s0
            stops[1 + a] = s0 + (outs[a] - 1) * stride[a] + 1
            steps[1 + a] = stride[a]
        pieces.append(ops.slice(xt, starts=tuple(starts), stops=tuple(stops),
                                steps=tuple(steps)))
    return pieces[0] if len(pieces) == 1 else ops.concat(*pieces, axis=nd + 1)


def _grouped(cols, w, g, B, outs):
    """The grouped convolution of conv_gemm: columns [B, *outs, taps * C] -> [B, *outs,
    O], before the bias."""
    nd = w.ndim - 2
    O, Cg = w.shape[0], w.shape[1]
    Og, taps = O // g, prod(w.shape[2:])
    if Cg == 1 and Og == 1:
        # depthwise: per channel the sum over the taps of column times weight
        c4 = ops.reshape(cols, shape=(B,) + tuple(outs) + (taps, O))
        wt = ops.transpose(ops.reshape(w, shape=(O, taps)), axes=(1, 0))    # [taps, C]
        return ops.sum(ops.mul(c4, wt), axis=nd + 1)
    n = B * prod(outs)
    cols = ops.reshape(cols, shape=(n, taps, g, Cg))
    cols = ops.reshape(ops.transpose(cols, axes=(2, 0, 1, 3)), shape=(g, n, taps * Cg))
    # w [O, Cg, *k] -> [g, Og, Cg, taps] -> [g, taps, Cg, Og]
    wg = ops.reshape(w, shape=(g, Og, Cg, taps))
    wg = ops.reshape(ops.transpose(wg, axes=(0, 3, 2, 1)), shape=(g, taps * Cg, Og))
    y = ops.matmul(cols, wg)                                 # [g, n, Og]
    return ops.reshape(ops.transpose(y, axes=(1, 0, 2)), shape=(B,) + tuple(outs) + (O,))


def group_normalize(x, groups: int, eps):
    """x [N, C, *] normalised over each group of C / groups channels and every position
    (mean, biased variance; ``eps`` a 0-d tensor of x's dtype), no affine: (y, mean,
    rstd), the statistics [N, groups, 1]. GroupNorm's core; InstanceNorm's with a group
    per channel."""
    N, C = x.shape[0], x.shape[1]
    rest = tuple(x.shape[2:])
    xg = ops.reshape(x, shape=(N, groups, (C // groups) * prod(rest)))
    m = ops.mean(xg, axis=-1, keepdims=True)
    d = ops.sub(xg, m)
    rstd = ops.rsqrt(ops.add(ops.mean(ops.mul(d, d), axis=-1, keepdims=True), eps))
    return ops.reshape(ops.mul(d, rstd), shape=tuple(x.shape)), m, rstd


def per_channel(x, t):
    """``t`` [C] shaped to scale x [N, C, *] along its channels."""
    return ops.reshape(t, shape=(x.shape[1],) + (1,) * (x.ndim - 2))
