"""Ops that pattern rules and fusion introduce: attention, gemm with epilogue,
residual add + layernorm, and ``fused`` (a fusion group holding a subgraph).

Each has a NumPy reference, so a graph stays runnable on the reference backend after
every pass (that is what the numeric-check instrument relies on)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import AttrError, InputError, ShapeError
from ..ir.types import TensorType
from .elementwise import _erf, _sigmoid
from .registry import broadcast_shapes, register_op, require_float, same_dtype

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


def _attention_infer(types, attrs):
    q, k, v = types
    dt = same_dtype(types, "attention q, k, v")
    require_float(q, "attention q")
    if not (q.rank == k.rank == v.rank) or q.rank < 2:
        raise ShapeError(f"attention(): q, k, v must have the same rank >= 2, got {q}, {k}, {v}")
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"attention(): q and k head dims differ: {q} vs {k}")
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"attention(): k and v lengths differ: {k} vs {v}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        raise ShapeError(f"attention(): batch dims differ: {q}, {k}, {v}")
    try:
        attrs["scale"] = float(attrs["scale"])
    except (TypeError, ValueError):
        raise AttrError(f"attention(): scale must be a number, got {attrs['scale']!r}") \
            from None
    attrs["causal"] = bool(attrs["causal"])
    S, T = q.shape[-2], k.shape[-2]
    if isinstance(T, int) and T == 0:
        raise ShapeError(f"attention(): no keys to attend to ({k})")
    if attrs["causal"] and isinstance(S, int) and isinstance(T, int) and S > T:
        raise ShapeError(f"attention(): {S} causal queries but only {T} keys; the first "
                         "queries would see no key")
    return TensorType(q.shape[:-1] + (v.shape[-1],), dt)


@register_op("attention", kind="opaque", infer=_attention_infer)
def attention(q, k, v, *, scale=1.0, causal=False):
    """softmax(q @ k^T * scale [+ causal mask]) @ v. q: [..., S, d], k: [..., T, d],
    v: [..., T, dv]; causal masks key j > query i + (T - S) (bottom-right aligned)."""
    S, T = q.shape[-2], k.shape[-2]
    # A query that sees no key would give 0/0 = NaN: refuse, like causal_mask.
    if T == 0 or (causal and S > T):
        raise InputError(f"attention(): {S} {'causal ' if causal else ''}queries but "
                         f"{T} keys; every query must see at least one key")
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * np.asarray(scale, q.dtype)
    if causal:
        i = np.arange(S)[:, None]
        j = np.arange(T)[None, :]
        s = np.where(j > i + (T - S), np.asarray(-np.inf, s.dtype), s)
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
