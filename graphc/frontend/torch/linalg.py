"""Contractions: mm, bmm, addmm (linear with bias), matmul, baddbmm."""
from __future__ import annotations

from ... import ops
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
