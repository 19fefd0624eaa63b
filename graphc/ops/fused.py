"""Ops that pattern rules and fusion introduce: attention, gemm with epilogue,
residual add + layernorm, and ``fused`` (a fusion group holding a subgraph).

Each has a NumPy reference, so a graph stays runnable on the reference backend after
every pass (that is what the numeric-check instrument relies on)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import AttrError, DTypeError, InputError, ShapeError
from ..ir.types import TensorType
from .elementwise import _erf, _sigmoid
from .registry import broadcast_shapes, broadcasts_to, register_op, require_float, same_dtype

ACTIVATIONS = ("none", "relu", "gelu", "gelu_tanh", "silu")


def apply_activation(y: np.ndarray, activation: str) -> np.ndarray:
    if activation == "none":
        return y
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "gelu":
        return (0.5 * y * (1 + _erf(y / np.sqrt(2)))).astype(y.dtype)
    if activation == "gelu_tanh":
        # math.sqrt: a NumPy float64 scalar would promote a float32 y to float64.
        return 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))
    if activation == "silu":
        return y * _sigmoid(y)
    raise AttrError(f"unknown activation {activation!r}")


def _kv_batch(name, t, batch):
    """Check the batch dims of k or v against q's (``batch``): aligned from the right,
    each 1 (broadcast), equal, or a divisor of q's (a kv head read by a group of query
    heads: grouped-query attention)."""
    tb = t.shape[:-2]
    if len(tb) > len(batch):
        raise ShapeError(f"attention(): {name} {t} has more batch dims than q's "
                         f"[{','.join(map(str, batch))}]")
    for dq, dk in zip(batch[len(batch) - len(tb):], tb):
        if dk == 1 or dk == dq:
            continue
        if isinstance(dq, int) and isinstance(dk, int) and dk > 0 and dq % dk == 0:
            continue
        raise ShapeError(f"attention(): {name} {t} does not broadcast to the batch dims "
                         f"[{','.join(map(str, batch))}] of q: each of its batch dims must "
                         f"be 1, equal to q's or divide it (a head group), got {dk} "
                         f"against {dq}")


def _attention_infer(types, attrs):
    if len(types) not in (3, 4):
        raise ShapeError(f"attention() takes q, k, v and an optional mask, got "
                         f"{len(types)} operands")
    q, k, v = types[:3]
    dt = same_dtype(types[:3], "attention q, k, v")
    require_float(q, "attention q")
    if min(q.rank, k.rank, v.rank) < 2:
        raise ShapeError(f"attention(): q, k, v must have rank >= 2, got {q}, {k}, {v}")
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"attention(): q and k head dims differ: {q} vs {k}")
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"attention(): k and v lengths differ: {k} vs {v}")
    batch = q.shape[:-2]
    _kv_batch("k", k, batch)
    _kv_batch("v", v, batch)
    S, T = q.shape[-2], k.shape[-2]
    if len(types) == 4:
        mask = types[3]
        if mask.dtype not in (dt, "bool"):
            raise DTypeError(f"attention(): the mask must be bool (True: attend) or an "
                             f"additive {dt} mask like the scores, got {mask}")
        scores = batch + (S, T)
        if not broadcasts_to(mask.shape, scores):
            raise ShapeError(f"attention(): mask {mask} does not broadcast to the scores "
                             f"[{','.join(map(str, scores))}]")
    try:
        attrs["scale"] = float(attrs["scale"])
        attrs["mask_fill"] = float(attrs["mask_fill"])
    except (TypeError, ValueError):
        raise AttrError(f"attention(): scale and mask_fill must be numbers, got "
                        f"{attrs['scale']!r}, {attrs['mask_fill']!r}") from None
    attrs["causal"] = bool(attrs["causal"])
    cap = attrs.get("softcap", 0.0)
    if isinstance(cap, (bool, np.bool_)) or not isinstance(cap, (int, float, np.number)) \
            or not cap >= 0 or math.isinf(cap):
        raise AttrError(f"attention(): softcap must be a finite number >= 0 (0: none), "
                        f"got {cap!r}")
    attrs["softcap"] = float(cap)
    if isinstance(T, int) and T == 0:
        raise ShapeError(f"attention(): no keys to attend to ({k})")
    if attrs["causal"] and isinstance(S, int) and isinstance(T, int) and S > T:
        raise ShapeError(f"attention(): {S} causal queries but only {T} keys; the first "
                         "queries would see no key")
    return TensorType(batch + (S, v.shape[-1]), dt)


def expand_kv(x, batch):
    """k or v [..., T, d] repeated to the batch dims ``batch`` of q: a dim that divides
    q's is repeated per group (head h reads kv head h // group), a 1 broadcasts."""
    x = x.reshape((1,) * (len(batch) - (x.ndim - 2)) + x.shape)
    for axis, (dq, dk) in enumerate(zip(batch, x.shape[:-2])):
        if dk not in (1, dq):
            x = np.repeat(x, dq // dk, axis=axis)
    return np.broadcast_to(x, tuple(batch) + x.shape[-2:])


@register_op("attention", kind="opaque", infer=_attention_infer)
def attention(q, k, v, *mask, scale=1.0, causal=False, mask_fill=-math.inf, softcap=0.0):
    """softmax(q @ k^T * scale [+ mask] [+ causal mask]) @ v. q: [..., S, d], k: [..., T, d],
    v: [..., T, dv]. The batch dims of k and v broadcast to q's; one that divides q's
    groups the query heads (grouped-query attention: head h reads kv head h // group).
    ``mask`` (optional), broadcastable to the scores [..., S, T]: added when float
    (0 / -inf), or bool (True: attend; where it is False the score becomes ``mask_fill``).
    causal masks key j > query i + (T - S) (bottom-right aligned), after the mask.
    ``softcap`` > 0 caps the scaled scores, before the masks, to softcap * tanh(s /
    softcap) (Gemma 2's attention logit soft cap)."""
    S, T = q.shape[-2], k.shape[-2]
    # A query that sees no key would give 0/0 = NaN: refuse, like causal_mask.
    if T == 0 or (causal and S > T):
        raise InputError(f"attention(): {S} {'causal ' if causal else ''}queries but "
                         f"{T} keys; every query must see at least one key")
    batch = q.shape[:-2]
    k, v = expand_kv(k, batch), expand_kv(v, batch)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * np.asarray(scale, q.dtype)
    if softcap:
        c = np.asarray(softcap, q.dtype)
        s = c * np.tanh(s / c)
    if mask:
        (m,) = mask
        if m.dtype == np.bool_:
            s = np.where(m, s, np.asarray(mask_fill, s.dtype))
        else:
            s = s + m
    if causal:
        i = np.arange(S)[:, None]
        j = np.arange(T)[None, :]
        s = np.where(j > i + (T - S), np.asarray(-np.inf, s.dtype), s)
    with np.errstate(invalid="ignore"):     # a row masked whole is NaN (0/0), as softmax's
        s = s - np.max(s, axis=-1, keepdims=True)
        e = np.exp(s)
        return np.matmul(e / np.sum(e, axis=-1, keepdims=True), v)


def _gemm_infer(types, attrs):
    x, w, b = types
    dt = same_dtype(types, "gemm x, w, bias")
    require_float(x, "gemm x")
    if w.rank != 2 or x.rank < 1:
        raise ShapeError(f"gemm(): w must be 2-D and x at least 1-D, got {x}, {w}")
    if x.shape[-1] != w.shape[0]:
        raise ShapeError(f"gemm(): inner dims differ: {x} @ {w}")
    out = x.shape[:-1] + (w.shape[1],)
    if broadcast_shapes(out, b.shape) != out:
        raise ShapeError(f"gemm(): bias {b} does not broadcast to the output {out}")
    if attrs["activation"] not in ACTIVATIONS:
        raise AttrError(f"gemm(): activation must be one of {ACTIVATIONS}")
    return TensorType(out, dt)


@register_op("gemm", kind="contraction", infer=_gemm_infer)
def gemm(x, w, bias, *, activation="none"):
    """activation(x @ w + bias): a GEMM with its epilogue (w is [in, out])."""
    return apply_activation(np.matmul(x, w) + bias, activation)


def _add_layernorm_infer(types, attrs):
    a, b, w, beta = types
    from .reduction import _check_eps, _norm_params
    _check_eps(attrs, "add_layernorm")
    s = broadcast_shapes(a.shape, b.shape)
    if s != a.shape:
        raise ShapeError(f"add_layernorm(): residual {b} must broadcast to {a}")
    same_dtype(types, "add_layernorm operands")
    return _norm_params([a, w, beta], 2, "add_layernorm")


def _add_layernorm_row(ctx):
    from ..lower import loopir as L
    from .reduction import layernorm_row
    return layernorm_row(ctx, lambda i: L.Cast(L.Bin("+", ctx.value(0, i, None),
                                                     ctx.value(1, i, None)), ctx.ACC), 2)


@register_op("add_layernorm", kind="reduction", infer=_add_layernorm_infer,
             lower_row=_add_layernorm_row)
def add_layernorm(x, residual, weight, bias, *, eps=1e-5):
    """layernorm(x + residual, weight, bias, eps): the post-norm residual in one op"""
    y = x + residual
    mu = np.mean(y, axis=-1, keepdims=True)
    yc = y - mu
    var = np.mean(yc * yc, axis=-1, keepdims=True)
    return yc / np.sqrt(var + np.asarray(eps, y.dtype)) * weight + bias


def _fused_infer(types, attrs):
    from ..ir.graph import Graph
    body = attrs["body"]
    if not isinstance(body, Graph):
        raise AttrError(f"fused group body must be a graphc.Graph, got {type(body).__name__}")
    if len(types) != len(body.inputs):
        raise ShapeError(f"fused group takes {len(body.inputs)} operands, got {len(types)}")
    for t, bt in zip(types, body.input_types):
        if t != bt:
            raise ShapeError(f"fused group operand {t} does not match its body input {bt}")
    if len(body.outputs) != 1:
        raise ShapeError("a fused group has exactly one output")
    if attrs["kind"] not in ("elementwise", "reduction", "contraction", "attention",
                             "movement", "opaque"):
        raise AttrError(f"fused group kind {attrs['kind']!r} is not known")
    return body.output_types[0]


@register_op("fused", kind="opaque", infer=_fused_infer, run_with_context=True,
             no_fold=True)
def fused(*xs, body, kind, _bindings=None, _float64=False):
    """A fusion group: ``body`` is the subgraph it computes (one output); ``kind`` is
    the group's anchor kind (what lowering picks a template by)."""
    from ..runtime.interpreter import run_graph
    return run_graph(body, list(xs), dict(_bindings or {}), float64=_float64)[0]


__all__ = ["attention", "gemm", "add_layernorm", "fused", "apply_activation", "ACTIVATIONS"]
