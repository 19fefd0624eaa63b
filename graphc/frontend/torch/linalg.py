"""Contractions: mm, bmm, addmm (linear with bias), matmul, baddbmm, convolution (as a
GEMM over gathered taps)."""
from __future__ import annotations

from ... import ops
from .movement import pad_axis
from .table import aten_op


@aten_op("mm.default", "bmm.default", "matmul.default")
def mm(ctx):
    return ops.matmul(ctx.arg(0), ctx.arg(1))


@aten_op("addmm.default", "baddbmm.default")
def addmm(ctx):
    bias, a, b = ctx.arg(0), ctx.arg(1), ctx.arg(2)
    beta, alpha = ctx.kw("beta", 1), ctx.kw("alpha", 1)
    y = ops.matmul(a, b)
    if alpha != 1:
        y = ops.mul(y, float(alpha))
    if beta == 0:
        return y
    if beta != 1:
        bias = ops.mul(bias, float(beta))
    return ops.add(y, bias)        # x @ W^T + b: the gemm epilogue rule matches this order


@aten_op("convolution.default", "conv1d.default", "conv2d.default")
def convolution(ctx):
    """A convolution as a GEMM: the input channels-last, the kernel's taps gathered as
    strided slices of the (zero-padded) input concatenated along the channels (im2col;
    a patch embedding, stride == kernel with no padding, is a reshape instead), times
    the weight as [taps * C, O], the bias added, the channels moved back. Groups and
    transposed convolutions are an error."""
    from ...ir.dims import prod
    x, w, bias = ctx.arg(0), ctx.arg(1), ctx.arg(2)
    if ctx.op == "aten.convolution.default":
        stride, padding, dilation = ctx.arg(3), ctx.arg(4), ctx.arg(5)
        transposed, groups = ctx.arg(6), ctx.arg(8)
    else:
        stride, padding, dilation = (ctx.arg(3, "stride", 1), ctx.arg(4, "padding", 0),
                                     ctx.arg(5, "dilation", 1))
        transposed, groups = False, ctx.arg(6, "groups", 1)
    nd = w.ndim - 2
    if transposed:
        raise ctx.fail("a transposed convolution")
    if groups != 1:
        raise ctx.fail(f"a convolution with groups={groups} (graphc lowers groups=1)")
    if isinstance(padding, str):
        raise ctx.fail(f"padding={padding!r}")
    # one value for every spatial dim (an int, or a list of one)
    stride, padding, dilation = ([v] * nd if isinstance(v, int) else
                                 list(v) * nd if len(v) == 1 else list(v)
                                 for v in (stride, padding, dilation))
    O, C = w.shape[0], w.shape[1]
    kernel = list(w.shape[2:])
    out_shape = ctx.out_shape()
    B = x.shape[0]
    # channels last: [B, *spatial, C]
    xt = ops.transpose(x, axes=(0,) + tuple(range(2, 2 + nd)) + (1,))
    spatial = list(xt.shape[1:1 + nd])
    outs = list(out_shape[2:])
    patch = (stride == kernel and all(p == 0 for p in padding) and all(d == 1 for d in dilation)
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
        zero = ctx.tensor(0.0, xt.dtype)
        for a, p in enumerate(padding):
            xt = pad_axis(xt, 1 + a, p, p, zero)
        taps = [()]
        for k in kernel:
            taps = [t + (i,) for t in taps for i in range(k)]
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
        cols = pieces[0] if len(pieces) == 1 else ops.concat(*pieces, axis=nd + 1)
        # weight [O, C, k1, ..] -> [O, taps, C]: the columns' (tap, channel) order
        wmat = ops.transpose(w, axes=(0,) + tuple(range(2, 2 + nd)) + (1,))
        wmat = ops.reshape(wmat, shape=(O, prod(kernel) * C))
    y = ops.matmul(cols, ops.transpose(wmat, axes=(1, 0)))
    if bias is not None:
        y = ops.add(y, bias)
    return ops.transpose(y, axes=(0, nd + 1) + tuple(range(1, nd + 1)))
