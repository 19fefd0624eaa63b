"""The ops that pattern rules and fusion introduce (attention, gemm, add_layernorm, fused)
on the reference backend against NumPy written here. Users rarely call them, but each is
a registered op with a reference the passes rely on, so each is checked like the others."""
import numpy as np
import pytest

import graphc
from graphc import ops, spec
from opcheck import (FLOATS, assert_matches, assert_reported_at, check, concrete, erf64,
                     line_in, next_line, randn)


def _attention(q, k, v, scale, causal):
    """Row by row: each query attends to the keys it may see."""
    S, T = q.shape[-2], k.shape[-2]
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for b in np.ndindex(q.shape[:-2]):
        for i in range(S):
            seen = T - S + i + 1 if causal else T
            s = np.array([scale * np.dot(q[b][i], k[b][j]) for j in range(seen)])
            p = np.exp(s - s.max())
            out[b][i] = (p / p.sum()) @ v[b][:seen]
    return out


ATTN_SHAPES = [((4, 8), (6, 8), (6, 3)), (("S", 8), ("T", 8), ("T", 8)),
               ((2, "S", 4), (2, "T", 4), (2, "T", 5)), ((2, 3, "S", 4), (2, 3, "S", 4),
                                                         (2, 3, "S", 4))]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shapes", ATTN_SHAPES, ids=str)
def test_attention(shapes, dtype, causal, rng):
    sizes = [{"S": 1, "T": 1}, {"S": 3, "T": 5}]
    if not causal:
        sizes.append({"S": 4, "T": 2})
    if "S" in shapes[1]:
        sizes = [{"S": s["S"], "T": s["S"]} for s in sizes]
    cases = [tuple(randn(rng, concrete(sh, s), dtype) for sh in shapes) for s in sizes]
    check(lambda q, k, v: ops.attention(q, k, v, scale=0.35, causal=causal),
          [spec(sh, dtype) for sh in shapes], cases,
          lambda q, k, v: _attention(q, k, v, 0.35, causal), out_dtypes=[dtype],
          # The output averages rows of v; its error scales with |v|, not the average.
          magnitude=lambda q, k, v: _attention(q, k, np.abs(v), 0.35, causal))


def test_attention_defaults(rng):
    q, k, v = randn(rng, (3, 4)), randn(rng, (5, 4)), randn(rng, (5, 2))
    out = ops.attention(q, k, v)
    assert type(out) is np.ndarray
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    assert_matches(out, _attention(q, k, v, 1.0, False), np.float32,
                   magnitude=_attention(q, k, np.abs(v), 1.0, False))


def test_attention_causal_needs_a_key_per_query(rng):
    def fn(q, k):
        return ops.attention(q, k, k, causal=True)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec((4, 2)), spec((3, 2)))
    assert_reported_at(ei.value, line_in(fn), "attention")
    exe = graphc.compile(graphc.trace(fn, spec(("S", 2)), spec(("T", 2))))
    with pytest.raises(graphc.GraphcError) as ei:
        exe(randn(rng, (4, 2)), randn(rng, (3, 2)))   # would be NaN rows
    assert_reported_at(ei.value, line_in(fn), "attention")


@pytest.mark.parametrize("shapes", [((4, 8), (6, 7), (6, 3)), ((4, 8), (6, 8), (5, 3)),
                                    ((4, 8), (2, 6, 8), (2, 6, 3)),
                                    ((2, 4, 8), (3, 6, 8), (3, 6, 3)), ((8,), (8,), (8,)),
                                    ((4, 8), (0, 8), (0, 8))], ids=str)
def test_attention_bad_shapes(shapes):
    def fn(q, k, v):
        return ops.attention(q, k, v)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, *(spec(s) for s in shapes))
    assert_reported_at(ei.value, line_in(fn), "attention")


@pytest.mark.parametrize("scale", ["big", None])
def test_attention_bad_scale(scale, rng):
    x = randn(rng, (2, 4))
    with pytest.raises(graphc.AttrError) as ei:
        at = next_line()
        ops.attention(x, x, x, scale=scale)
    assert_reported_at(ei.value, at, "attention")


ACTIVATIONS = {
    "none": lambda y: y,
    "relu": lambda y: y * (y > 0),
    "gelu": lambda y: 0.5 * y * (1 + erf64(y / np.sqrt(2.0))),
    "gelu_tanh": lambda y: 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3))),
    "silu": lambda y: y / (1 + np.exp(-y)),
}


def _linear(x, w, b):
    """x @ w + b as explicit sums over the input features."""
    return np.einsum("...i,io->...o", x, w) + b


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shapes", [((3, 4), (4, 5), (5,)), (("S", 8), (8, 3), (1, 3)),
                                    ((2, "S", 4), (4, 6), ("S", 6)), ((4,), (4, 2), (2,))],
                         ids=str)
def test_gemm(shapes, dtype, activation, rng):
    cases = [tuple(randn(rng, concrete(sh, {"S": n}), dtype) for sh in shapes) for n in (1, 3)]
    check(lambda x, w, b: ops.gemm(x, w, b, activation=activation),
          [spec(sh, dtype) for sh in shapes], cases,
          lambda x, w, b: ACTIVATIONS[activation](_linear(x, w, b)), out_dtypes=[dtype],
          magnitude=lambda x, w, b: _linear(np.abs(x), np.abs(w), np.abs(b)))


def test_gemm_eager_default_activation(rng):
    x, w, b = randn(rng, (3, 4)), randn(rng, (4, 2)), randn(rng, (2,))
    out = ops.gemm(x, w, b)
    assert type(out) is np.ndarray
    x, w, b = (a.astype(np.float64) for a in (x, w, b))
    assert_matches(out, _linear(x, w, b), np.float32,
                   magnitude=_linear(np.abs(x), np.abs(w), np.abs(b)))


@pytest.mark.parametrize("shapes", [((3, 4), (5, 2), (2,)), ((3, 4), (2, 4, 2), (2,)),
                                    ((3, 4), (4, 2), (3,)), ((3, 4), (4, 2), (4, 3, 2))],
                         ids=str)
def test_gemm_bad_shapes(shapes):
    def fn(x, w, b):
        return ops.gemm(x, w, b)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, *(spec(s) for s in shapes))
    assert_reported_at(ei.value, line_in(fn), "gemm")


def test_gemm_bad_activation_and_dtype():
    def fn(x, w, b):
        return ops.gemm(x, w, b, activation="tanh")
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3, 4)), spec((4, 2)), spec((2,)))
    assert_reported_at(ei.value, line_in(fn), "gemm")

    def fn2(x, w, b):
        return ops.gemm(x, w, b)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn2, spec((3, 4), "int32"), spec((4, 2), "int32"), spec((2,), "int32"))
    assert_reported_at(ei.value, line_in(fn2), "gemm")


def _layernorm(x, w, b, eps):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * w + b


@pytest.mark.parametrize("eps", [1e-5, 0.2])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shapes", [((3, 8), (3, 8)), (("S", 8), (8,)),
                                    ((2, "S", 8), ("S", 8)), ((4,), (1,))], ids=str)
def test_add_layernorm(shapes, dtype, eps, rng):
    d = shapes[0][-1]
    specs = [spec(shapes[0], dtype), spec(shapes[1], dtype), spec((d,), dtype),
             spec((d,), dtype)]
    cases = [(randn(rng, concrete(shapes[0], {"S": n}), dtype),
              randn(rng, concrete(shapes[1], {"S": n}), dtype),
              randn(rng, (d,), dtype), randn(rng, (d,), dtype)) for n in (1, 3)]
    check(lambda x, r, w, b: ops.add_layernorm(x, r, w, b, eps=eps), specs, cases,
          lambda x, r, w, b: _layernorm(x + r, w, b, eps), out_dtypes=[dtype])


def test_add_layernorm_errors():
    def fn(x, r, w, b):
        return ops.add_layernorm(x, r, w, b)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec((8,)), spec((3, 8)), spec((8,)), spec((8,)))
    assert_reported_at(ei.value, line_in(fn), "add_layernorm")
    with pytest.raises(graphc.ShapeError):
        graphc.trace(fn, spec((3, 8)), spec((3, 8)), spec((4,)), spec((8,)))
    with pytest.raises(graphc.DTypeError):
        graphc.trace(fn, spec((3, 8)), spec((3, 8), "float64"), spec((8,)), spec((8,)))

    def fn2(x, r, w, b):
        return ops.add_layernorm(x, r, w, b, eps=-1.0)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn2, spec((3, 8)), spec((3, 8)), spec((8,)), spec((8,)))
    assert_reported_at(ei.value, line_in(fn2), "add_layernorm")


@pytest.mark.parametrize("dtype", FLOATS)
def test_fused_runs_its_body(dtype, rng):
    body = graphc.trace(lambda a, c: graphc.gelu(a) * c + a, spec(("S", 4), dtype),
                        spec((4,), dtype))

    def fn(a, c):
        return ops.fused(a, c, body=body, kind="elementwise")
    cases = [(randn(rng, (n, 4), dtype), randn(rng, (4,), dtype)) for n in (1, 5)]
    g = check(fn, [spec(("S", 4), dtype), spec((4,), dtype)], cases,
              lambda a, c: 0.5 * a * (1 + erf64(a / np.sqrt(2.0))) * c + a,
              out_dtypes=[dtype])
    assert g.op_counts()["fused"] == 1


def test_fused_reduction_body_and_eager(rng):
    body = graphc.trace(lambda s: graphc.softmax(graphc.scale(s, 0.5), axis=-1),
                        spec((3, 6)))
    s = randn(rng, (3, 6))
    out = ops.fused(s, body=body, kind="reduction")
    assert type(out) is np.ndarray
    e = np.exp(0.5 * s.astype(np.float64))
    assert_matches(out, e / e.sum(-1, keepdims=True), np.float32)


def test_fused_bad_operands():
    body = graphc.trace(lambda a, c: a * c, spec(("S", 4)), spec((4,)))

    def count(a):
        return ops.fused(a, body=body, kind="elementwise")
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(count, spec(("S", 4)))
    assert_reported_at(ei.value, line_in(count), "fused")

    def types(a, c):
        return ops.fused(a, c, body=body, kind="elementwise")
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(types, spec(("T", 4)), spec((4,)))
    assert_reported_at(ei.value, line_in(types), "fused")

    def kind(a, c):
        return ops.fused(a, c, body=body, kind="magic")
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(kind, spec(("S", 4)), spec((4,)))
    assert_reported_at(ei.value, line_in(kind), "fused")

    def not_a_graph(a):
        return ops.fused(a, body=lambda a: a, kind="elementwise")
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(not_a_graph, spec((4,)))
    assert_reported_at(ei.value, line_in(not_a_graph), "fused")
