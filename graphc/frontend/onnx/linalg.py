"""Contractions: MatMul, Gemm, Einsum (two-operand equations become one batched matmul;
more operands contract pairwise; a repeated index takes the diagonal), Conv (one GEMM
over gathered taps, as the torch importer's convolution)."""
from __future__ import annotations

import numpy as np

from ... import ops
from ...ir.dims import prod
from ...ir.types import FLOAT_DTYPES
from ..patterns import conv_gemm
from .common import const
from .table import onnx_op


@onnx_op("MatMul")
def matmul(ctx):
    a, b = ctx.t(0), ctx.t(1)
    if a.dtype not in FLOAT_DTYPES:
        raise ctx.fail(f"MatMul of {a.dtype} tensors: graphc multiplies float matrices")
    if b.ndim == 2 and a.ndim >= 3 and a.node.op == "transpose" \
            and a.node.attrs["axes"][-1] == a.ndim - 1:
        # transpose(x, p) @ W with p keeping the last axis = transpose(x @ W, p): one
        # GEMM over x's rows as they lie (torch's MultiheadAttention export transposes
        # [B, S, E] to [S, B, E] first; as a batch of S [B, E] products that is S GEMMs)
        src = a.builder.wrap(a.node.inputs[0])
        return ops.transpose(ops.matmul(src, b), axes=tuple(a.node.attrs["axes"]))
    return ops.matmul(a, b)


@onnx_op("Gemm")
def gemm(ctx):
    a, b = ctx.t(0), ctx.t(1)
    if int(ctx.attr("transA", 0)):
        a = ops.transpose(a, axes=(1, 0))
    if int(ctx.attr("transB", 0)):
        b = ops.transpose(b, axes=(1, 0))
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    y = ops.matmul(a, b)
    if alpha != 1.0:
        y = ops.mul(y, const(ctx, alpha, y.dtype))
    if ctx.has(2) and beta != 0.0:
        c = ctx.t(2)
        if beta != 1.0:
            c = ops.mul(c, const(ctx, beta, c.dtype))
        y = ops.add(y, c)
    return y


@onnx_op("Conv")
def conv(ctx):
    """Conv (any group count, stride, dilation, explicit or auto padding) as one GEMM,
    a batched one over groups, or a sum of taps when depthwise
    (graphc.frontend.patterns.conv_gemm). An output size that floor-divides a dynamic
    dim (a stride over a dynamic length) has no symbolic form: an error that says to
    pin the dim."""
    x, w = ctx.t(0), ctx.t(1)
    bias = ctx.t(2) if ctx.has(2) else None
    if x.dtype not in FLOAT_DTYPES or w.dtype != x.dtype:
        raise ctx.fail(f"Conv of {x.dtype} by {w.dtype}: graphc convolves float tensors "
                       f"of one dtype")
    nd = w.ndim - 2
    if nd < 1 or x.ndim != w.ndim:
        raise ctx.fail(f"Conv of a rank-{x.ndim} input by a rank-{w.ndim} weight")
    group = int(ctx.attr("group", 1))
    if group < 1 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise ctx.fail(f"group={group} for input {x.shape} and weight {w.shape}")
    kernel = list(w.shape[2:])
    if any(not isinstance(k, int) for k in kernel) or not isinstance(w.shape[1], int):
        raise ctx.fail(f"a weight of symbolic shape {w.shape}")
    if ctx.attr("kernel_shape") is not None and list(ctx.attr("kernel_shape")) != kernel:
        raise ctx.fail(f"kernel_shape {list(ctx.attr('kernel_shape'))} but the weight's "
                       f"is {kernel}")
    stride = [int(v) for v in ctx.attr("strides", [1] * nd)]
    dilation = [int(v) for v in ctx.attr("dilations", [1] * nd)]
    pads = [int(v) for v in ctx.attr("pads", [0] * (2 * nd))]
    auto = ctx.attr("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if len(stride) != nd or len(dilation) != nd or len(pads) != 2 * nd:
        raise ctx.fail(f"strides {stride}, dilations {dilation}, pads {pads} for {nd} "
                       f"spatial dims")
    before, after, outs = [], [], []
    for a in range(nd):
        L, k, s, d = x.shape[2 + a], kernel[a], stride[a], dilation[a]
        span = d * (k - 1) + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if s == 1:
                out, total = L, span - 1
            elif isinstance(L, int):
                out = -(-L // s)
                total = max((out - 1) * s + span - L, 0)
            else:
                raise ctx.fail(f"stride {s} over the dynamic dim {L} of input {x.shape}: "
                               f"its output size ceil({L} / {s}) has no symbolic form; pin "
                               f"the dim with from_onnx(..., dims=...)")
            small, big = total // 2, total - total // 2
            p0, p1 = (small, big) if auto == "SAME_UPPER" else (big, small)
        elif auto in ("NOTSET", "VALID"):
            p0, p1 = (pads[a], pads[nd + a]) if auto == "NOTSET" else (0, 0)
            num = L + p0 + p1 - span
            if s == 1:
                out = num + 1
            elif isinstance(num, int):
                out = num // s + 1
            else:
                raise ctx.fail(f"stride {s} over the dynamic dim {L} of input {x.shape}: "
                               f"its output size floor(({num}) / {s}) + 1 has no symbolic "
                               f"form; pin the dim with from_onnx(..., dims=...)")
        else:
            raise ctx.fail(f"auto_pad={auto!r}")
        if isinstance(out, int) and out < 1:
            raise ctx.fail(f"the kernel {kernel} (dilations {dilation}) is larger than the "
                           f"padded input {x.shape}")
        before.append(p0)
        after.append(p1)
        outs.append(out)
    return conv_gemm(x, w, bias, stride, before, after, dilation, outs,
                     lambda: const(ctx, 0.0, x.dtype), group)


_POOL = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _parse(ctx, eq: str, ranks):
    eq = eq.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ctx.fail(f"equation {eq!r} has {len(terms)} operands, the node {len(ranks)}")
    ell_rank = 0
    for t, r in zip(terms, ranks):
        if "..." in t:
            ell_rank = max(ell_rank, r - (len(t) - 3))
    ell = _POOL[:ell_rank]
    out_terms = []
    for t, r in zip(terms, ranks):
        if "..." in t:
            n = r - (len(t) - 3)
            t = t.replace("...", ell[ell_rank - n:])
        if len(t) != r:
            raise ctx.fail(f"term {t!r} of {eq!r} does not match an operand of rank {r}")
        out_terms.append(t)
    if arrow:
        out = rhs.replace("...", ell)
    else:
        counts = {}
        for t in out_terms:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    return out_terms, out


def _diagonals(ctx, x, term):
    """x[.., i, .., i, ..] -> x[.., i, ..] for each letter repeated in ``term``."""
    from .movement import take_static
    while len(set(term)) != len(term):
        c = next(ch for ch in term if term.count(ch) > 1)
        p = term.index(c)
        q = term.index(c, p + 1)
        n = x.shape[p]
        if not isinstance(n, int) or x.shape[q] != n:
            raise ctx.fail(f"the diagonal of {c!r} needs equal static dims, got "
                           f"{x.shape[p]} and {x.shape[q]}")
        rest = [k for k in range(x.ndim) if k not in (p, q)]
        x = ops.transpose(x, axes=tuple(rest + [p, q]))
        x = ops.reshape(x, shape=tuple(x.shape[:-2]) + (n * n,))
        x = take_static(ctx, x, x.ndim - 1, np.arange(n) * (n + 1))
        term = "".join(term[k] for k in rest) + c
    return x, term


def _reduce_to(x, term, keep):
    """Sum away the letters of ``term`` not in ``keep``."""
    drop = [k for k, c in enumerate(term) if c not in keep]
    if drop:
        x = ops.sum(x, axis=tuple(drop), keepdims=False)
        term = "".join(c for c in term if c in keep)
    return x, term


def _pair(a, ta, b, tb, keep):
    """Contract a[ta] and b[tb] into the letters ``keep`` (in the order batch, a-only,
    b-only) with one batched matmul."""
    a, ta = _reduce_to(a, ta, set(tb) | set(keep))
    b, tb = _reduce_to(b, tb, set(ta) | set(keep))
    batch = [c for c in ta if c in tb and c in keep]
    contr = [c for c in ta if c in tb and c not in keep]
    aonly = [c for c in ta if c not in tb]
    bonly = [c for c in tb if c not in ta]
    a = ops.transpose(a, axes=tuple(ta.index(c) for c in batch + aonly + contr))
    b = ops.transpose(b, axes=tuple(tb.index(c) for c in batch + contr + bonly))
    ash, bsh = tuple(a.shape), tuple(b.shape)
    nb = len(batch)
    L = prod(ash[nb:nb + len(aonly)])
    K = prod(ash[nb + len(aonly):])
    R = prod(bsh[nb + len(contr):])
    a = ops.reshape(a, shape=ash[:nb] + (L, K))
    b = ops.reshape(b, shape=bsh[:nb] + (K, R))
    y = ops.matmul(a, b)
    bshape = tuple(y.shape[:nb])
    y = ops.reshape(y, shape=bshape + ash[nb:nb + len(aonly)] + bsh[nb + len(contr):])
    return y, "".join(batch + aonly + bonly)


@onnx_op("Einsum")
def einsum(ctx):
    xs = ctx.ts()
    eq = ctx.attr("equation")
    terms, out = _parse(ctx, eq, [x.ndim for x in xs])
    dt = xs[0].dtype
    if dt not in FLOAT_DTYPES:
        xs = [ops.cast(x, dtype="float64") for x in xs]
    for k in range(len(xs)):
        xs[k], terms[k] = _diagonals(ctx, xs[k], terms[k])
    x, t = xs[0], terms[0]
    for k in range(1, len(xs)):
        later = set(out).union(*terms[k + 1:]) if k + 1 < len(terms) else set(out)
        x, t = _pair(x, t, xs[k], terms[k], later)
    x, t = _reduce_to(x, t, set(out))
    if t != out:
        x = ops.transpose(x, axes=tuple(t.index(c) for c in out))
    if dt not in FLOAT_DTYPES:
        x = ops.cast(x, dtype=dt)
    return x
