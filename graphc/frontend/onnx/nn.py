"""Neural-network ONNX ops: activations, LayerNormalization, RMSNormalization,
InstanceNormalization, GroupNormalization, RotaryEmbedding, Attention (attention.py)."""
from __future__ import annotations


from ... import ops
from ...ir.types import FLOAT_DTYPES
from ..patterns import group_normalize, per_channel
from .common import axis_of, const
from .table import onnx_op


def _float(ctx, k=0):
    x = ctx.t(k)
    if x.dtype not in FLOAT_DTYPES:
        raise ctx.fail(f"{ctx.op_type} of a {x.dtype} tensor: ONNX defines it for floats")
    return x


def _c(ctx, x, v):
    return const(ctx, v, x.dtype)


@onnx_op("Gelu")
def gelu(ctx):
    approx = ctx.attr("approximate", "none")
    if approx not in ("none", "tanh"):
        raise ctx.fail(f"approximate={approx!r}")
    return ops.gelu(_float(ctx), approximate=approx)


@onnx_op("Elu")
def elu(ctx):
    x = _float(ctx)
    alpha = float(ctx.attr("alpha", 1.0))
    return ops.where(ops.less(x, _c(ctx, x, 0)), ops.mul(ops.expm1(x), _c(ctx, x, alpha)), x)


@onnx_op("Celu")
def celu(ctx):
    x = _float(ctx)
    alpha = float(ctx.attr("alpha", 1.0))
    neg = ops.mul(ops.expm1(ops.div(x, _c(ctx, x, alpha))), _c(ctx, x, alpha))
    return ops.add(ops.maximum(x, _c(ctx, x, 0)), ops.minimum(neg, _c(ctx, x, 0)))


@onnx_op("Selu")
def selu(ctx):
    x = _float(ctx)
    alpha = float(ctx.attr("alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr("gamma", 1.05070102214813232421875))
    neg = ops.mul(ops.expm1(x), _c(ctx, x, alpha * gamma))
    return ops.where(ops.greater(x, _c(ctx, x, 0)), ops.mul(x, _c(ctx, x, gamma)), neg)


@onnx_op("LeakyRelu")
def leaky_relu(ctx):
    x = _float(ctx)
    alpha = float(ctx.attr("alpha", 0.01))
    return ops.where(ops.less(x, _c(ctx, x, 0)), ops.mul(x, _c(ctx, x, alpha)), x)


@onnx_op("PRelu")
def prelu(ctx):
    x, slope = _float(ctx), ctx.t(1)
    return ops.where(ops.less(x, _c(ctx, x, 0)), ops.mul(x, slope), x)


@onnx_op("ThresholdedRelu")
def thresholded_relu(ctx):
    x = _float(ctx)
    alpha = float(ctx.attr("alpha", 1.0))
    return ops.where(ops.greater(x, _c(ctx, x, alpha)), x, _c(ctx, x, 0))


def _hard_sigmoid(ctx, x, alpha, beta):
    return ops.clip(ops.add(ops.mul(x, _c(ctx, x, alpha)), _c(ctx, x, beta)), min=0.0, max=1.0)


@onnx_op("HardSigmoid")
def hard_sigmoid(ctx):
    x = _float(ctx)
    return _hard_sigmoid(ctx, x, float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5)))


@onnx_op("HardSwish")
def hard_swish(ctx):
    x = _float(ctx)
    return ops.mul(x, _hard_sigmoid(ctx, x, 1 / 6, 0.5))


@onnx_op("Softplus")
def softplus(ctx):
    return ops.softplus(_float(ctx))


@onnx_op("Softsign")
def softsign(ctx):
    x = _float(ctx)
    return ops.div(x, ops.add(ops.abs(x), _c(ctx, x, 1)))


@onnx_op("Mish")
def mish(ctx):
    x = _float(ctx)
    return ops.mul(x, ops.tanh(ops.softplus(x)))


@onnx_op("Swish")
def swish(ctx):
    x = _float(ctx)
    alpha = float(ctx.attr("alpha", 1.0))
    ax = x if alpha == 1.0 else ops.mul(x, _c(ctx, x, alpha))
    return ops.mul(x, ops.sigmoid(ax))


def _norm_axes(ctx, x):
    axis = axis_of(ctx, int(ctx.attr("axis", -1)), x.ndim)
    return axis, tuple(range(axis, x.ndim))


def _norm_setup(ctx):
    """What LayerNormalization and RMSNormalization share: (x, the normalised axes, eps,
    whether graphc's native op serves: the last axis alone, with [d] parameters of x's
    dtype)."""
    x = _float(ctx)
    axis, axes = _norm_axes(ctx, x)
    eps = float(ctx.attr("epsilon", 1e-5))
    last = (x.shape[-1],)
    params = [ctx.t(k) for k in (1, 2) if ctx.has(k)]
    native = axis == x.ndim - 1 and all(tuple(p.shape) == last and p.dtype == x.dtype
                                        for p in params)
    return x, axes, eps, native


def _inv_rms(ctx, x, axes, eps):
    """1 / sqrt(mean(x * x over axes) + eps), the axes kept: both decompositions' scale."""
    ms = ops.mean(ops.mul(x, x), axis=axes, keepdims=True)
    return ops.rsqrt(ops.add(ms, _c(ctx, x, eps)))


@onnx_op("LayerNormalization")
def layer_norm(ctx):
    x, axes, eps, native = _norm_setup(ctx)
    scale = ctx.t(1)
    bias = ctx.t(2) if ctx.has(2) else None
    if native and not ctx.wants(1) and not ctx.wants(2):
        if bias is None:
            bias = ops.broadcast_to(_c(ctx, x, 0), shape=(x.shape[-1],))
        return ops.layernorm(x, scale, bias, eps=eps)
    mu = ops.mean(x, axis=axes, keepdims=True)
    xc = ops.sub(x, mu)
    inv = _inv_rms(ctx, xc, axes, eps)
    y = ops.mul(ops.mul(xc, inv), scale)
    if bias is not None:
        y = ops.add(y, bias)
    return [y, mu, inv]


@onnx_op("RMSNormalization")
def rms_norm(ctx):
    x, axes, eps, native = _norm_setup(ctx)
    scale = ctx.t(1)
    if native:
        return ops.rmsnorm(x, scale, eps=eps)
    return ops.mul(ops.mul(x, _inv_rms(ctx, x, axes, eps)), scale)


def _grouped_norm(ctx, groups=None):
    """Instance / group normalisation of input 0 in ``groups`` groups (None: one per
    channel), then the [C] scale and bias (inputs 1, 2)."""
    x = _float(ctx)
    C = x.shape[1] if x.ndim >= 2 else None
    if x.ndim < 3 or not isinstance(C, int):
        raise ctx.fail(f"an input of shape {x.shape}: [N, C, D1, ...] with static C")
    groups = C if groups is None else groups
    if groups < 1 or C % groups:
        raise ctx.fail(f"{groups} groups of the {C} channels of {x.shape}")
    y, _, _ = group_normalize(x, groups, _c(ctx, x, float(ctx.attr("epsilon", 1e-5))))
    scale, bias = ctx.t(1), ctx.t(2)
    if groups != C and tuple(scale.shape) == (groups,) and ctx.opset < 21:
        # opset 18's GroupNormalization: a scale and bias per group
        scale, bias = (ops.reshape(ops.broadcast_to(ops.reshape(t, shape=(groups, 1)),
                                                    shape=(groups, C // groups)), shape=(C,))
                       for t in (scale, bias))
    for t, what in ((scale, "scale"), (bias, "bias")):
        if tuple(t.shape) != (C,):
            raise ctx.fail(f"{what} of shape {t.shape} for {C} channels")
    return ops.add(ops.mul(y, per_channel(x, scale)), per_channel(x, bias))


@onnx_op("InstanceNormalization")
def instance_norm(ctx):
    return _grouped_norm(ctx)


@onnx_op("GroupNormalization")
def group_norm(ctx):
    return _grouped_norm(ctx, int(ctx.attr("num_groups")))


@onnx_op("RotaryEmbedding")
def rotary_embedding(ctx):
    """X: [B, H, S, D] or [B, S, H*D] (num_heads); cos / sin caches [max_pos, R/2] read
    at position_ids [B, S], or [B, S, R/2] without them."""
    x = _float(ctx)
    cos, sin = ctx.t(1), ctx.t(2)
    interleaved = int(ctx.attr("interleaved", 0))
    rot = int(ctx.attr("rotary_embedding_dim", 0))
    heads = int(ctx.attr("num_heads", 0))
    shape = tuple(x.shape)
    if x.ndim == 3:
        if not heads:
            raise ctx.fail("a 3-D input needs num_heads")
        from ...ir.dims import exact_div
        d = exact_div(shape[2], heads)
        if d is None:
            raise ctx.fail(f"hidden size {shape[2]} is not a multiple of num_heads {heads}")
        x4 = ops.transpose(ops.reshape(x, shape=(shape[0], shape[1], heads, d)),
                           axes=(0, 2, 1, 3))
    elif x.ndim == 4:
        x4 = x
    else:
        raise ctx.fail(f"input of rank {x.ndim}")
    D = x4.shape[3]
    if rot == 0:
        rot = D
    if ctx.has(3):
        pos = ctx.t(3)
        from .movement import take
        cos = take(cos, 0, pos)        # [B, S, R/2]
        sin = take(sin, 0, pos)
    half = rot // 2
    cos = ops.slice(cos, starts=(None, None, 0), stops=(None, None, half), steps=(1, 1, 1))
    sin = ops.slice(sin, starts=(None, None, 0), stops=(None, None, half), steps=(1, 1, 1))
    cos = ops.reshape(cos, shape=(cos.shape[0], 1, cos.shape[1], half))   # [B, 1, S, R/2]
    sin = ops.reshape(sin, shape=(sin.shape[0], 1, sin.shape[1], half))
    B, H, S = x4.shape[0], x4.shape[1], x4.shape[2]
    xr = ops.slice(x4, starts=(None, None, None, 0), stops=(None, None, None, rot),
                   steps=(1, 1, 1, 1))
    if interleaved:
        pairs = ops.reshape(xr, shape=(B, H, S, half, 2))
        x1 = ops.reshape(ops.slice(pairs, starts=(None,) * 4 + (0,), stops=(None,) * 4 + (1,),
                                   steps=(1,) * 5), shape=(B, H, S, half))
        x2 = ops.reshape(ops.slice(pairs, starts=(None,) * 4 + (1,), stops=(None,) * 4 + (2,),
                                   steps=(1,) * 5), shape=(B, H, S, half))
    else:
        x1 = ops.slice(xr, starts=(None,) * 4, stops=(None, None, None, half),
                       steps=(1,) * 4)
        x2 = ops.slice(xr, starts=(None, None, None, half), stops=(None, None, None, rot),
                       steps=(1,) * 4)
    r1 = ops.sub(ops.mul(x1, cos), ops.mul(x2, sin))
    r2 = ops.add(ops.mul(x2, cos), ops.mul(x1, sin))
    if interleaved:
        r = ops.reshape(ops.concat(ops.reshape(r1, shape=(B, H, S, half, 1)),
                                   ops.reshape(r2, shape=(B, H, S, half, 1)), axis=4),
                        shape=(B, H, S, rot))
    else:
        r = ops.concat(r1, r2, axis=3)
    if rot != D:
        rest = ops.slice(x4, starts=(None, None, None, rot), stops=(None,) * 4,
                         steps=(1,) * 4)
        r = ops.concat(r, rest, axis=3)
    if x.ndim == 3:
        r = ops.reshape(ops.transpose(r, axes=(0, 2, 1, 3)), shape=shape)
    return r
