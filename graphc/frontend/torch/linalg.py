"""Contractions: mm, bmm, addmm (linear with bias), matmul, baddbmm, convolution (as a
GEMM over gathered taps)."""
from __future__ import annotations

from ... import ops
from ..patterns import conv_gemm
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
    the weight as [taps * C, O], the bias added, the channels moved back; grouped ones
    a batched GEMM over the groups, depthwise ones a sum of taps (patterns.conv_gemm).
    Transposed convolutions are an error."""
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
    if groups < 1 or x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        raise ctx.fail(f"groups={groups} for input {x.shape} and weight {w.shape}")
    if isinstance(padding, str):
        raise ctx.fail(f"padding={padding!r}")
    # one value for every spatial dim (an int, or a list of one)
    stride, padding, dilation = ([v] * nd if isinstance(v, int) else
                                 list(v) * nd if len(v) == 1 else list(v)
                                 for v in (stride, padding, dilation))
    return conv_gemm(x, w, bias, stride, padding, padding, dilation,
                     list(ctx.out_shape()[2:]), lambda: ctx.tensor(0.0, x.dtype), groups)
