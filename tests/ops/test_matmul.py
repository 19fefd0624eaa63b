"""matmul (NumPy semantics: 1-D operands, broadcast batch dims, symbolic dims) on the
reference backend against a broadcast-multiply-and-sum written here."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import graphc
from graphc import spec
from opcheck import FLOATS, assert_matches, assert_reported_at, check, concrete, line_in, randn


def _matmul(a, b):
    """a @ b without np.matmul: promote 1-D operands, broadcast, multiply, sum."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    out = (a2[..., :, :, None] * b2[..., None, :, :]).sum(axis=-2)
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


def _magnitude(a, b):
    """|a| @ |b|: what the rounding error of a @ b scales with."""
    return _matmul(np.abs(a), np.abs(b))


SHAPES = [
    ((3, 4), (4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((2, 3, 4), (4, 5)),
    ((4,), (2, 4, 3)),
    ((2, 3, 4), (4,)),
    ((2, 1, 3, 4), (5, 4, 2)),
    (("S", 8), (8, 4)),
    ((2, "S", 8), (2, 8, "S")),   # scores = q @ k^T
    ((2, "S", "S"), ("S", 4)),    # probs @ v
    ((3, "S"), ("S",)),           # contraction over a symbolic dim
]
SIZES = [{"S": 1}, {"S": 5}]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_matmul(shapes, dtype, rng):
    cases = [tuple(randn(rng, concrete(sh, s), dtype) for sh in shapes) for s in SIZES]
    check(lambda a, b: graphc.matmul(a, b), [spec(sh, dtype) for sh in shapes], cases,
          _matmul, out_dtypes=[dtype], magnitude=_magnitude)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=mutually_broadcastable_shapes(signature="(m?,n),(n,p?)->(m?,p?)",
                                            max_dims=2, min_side=1, max_side=4))
def test_matmul_any_shapes(shapes, rng):
    a_shape, b_shape = shapes.input_shapes
    a, b = randn(rng, a_shape, "float64"), randn(rng, b_shape, "float64")
    g = graphc.trace(lambda a, b: a @ b, spec(a_shape, "float64"), spec(b_shape, "float64"))
    out = graphc.compile(g, backend="reference")(a, b)
    assert out.shape == shapes.result_shape
    assert_matches(out, _matmul(a, b), np.float64, magnitude=_magnitude(a, b))


def test_matmul_operators_and_constant_weights(rng):
    w = randn(rng, (8, 3))
    m = randn(rng, (2, 5))
    check(lambda x: (x @ w, m @ x[:, :5].T), [spec(("S", 8))],
          [(randn(rng, (4, 8)),), (randn(rng, (1, 8)),)],
          lambda x: (_matmul(x, w), _matmul(m, x[:, :5].T)),
          magnitude=lambda x: (_magnitude(x, w), _magnitude(m, x[:, :5].T)))


def test_attention_scores_pattern(rng):
    """q @ k^T / sqrt(d) then @ v with a symbolic sequence length."""
    def attn(q, k, v):
        s = graphc.scale(q @ k.transpose(0, 2, 1), 0.25)
        return graphc.softmax(s, axis=-1) @ v

    def want(q, k, v):
        s = _matmul(q, np.swapaxes(k, 1, 2)) * 0.25
        e = np.exp(s - s.max(-1, keepdims=True))
        return _matmul(e / e.sum(-1, keepdims=True), v)
    specs = [spec((2, "S", 16))] * 3
    check(attn, specs, [tuple(randn(rng, (2, n, 16)) for _ in range(3)) for n in (1, 6)], want,
          magnitude=lambda q, k, v: np.broadcast_to(np.abs(v).max(), q.shape))


def test_eager_matmul_returns_numpy(rng):
    a, b = randn(rng, (2, 3, 4)), randn(rng, (4, 2))
    out = graphc.matmul(a, b)
    assert type(out) is np.ndarray
    assert_matches(out, _matmul(a, b), np.float32, magnitude=_magnitude(a, b))
    u, v = a[0, 0].astype(np.float64), a[1].T.astype(np.float64)
    assert_matches(graphc.matmul(u, v), _matmul(u, v), np.float64, magnitude=_magnitude(u, v))


# -- errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("shapes", [((3, 4), (5, 6)), ((4,), (5,)), (("S", 8), ("T", 8)),
                                    ((3, "S"), ("T", 2))], ids=str)
def test_inner_dims_must_match(shapes):
    def fn(a, b):
        return graphc.matmul(a, b)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, *(spec(s) for s in shapes))
    assert_reported_at(ei.value, line_in(fn), "matmul")


def test_batch_dims_must_broadcast():
    def fn(a, b):
        return a @ b
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec((2, 3, 4)), spec((3, 4, 5)))
    assert_reported_at(ei.value, line_in(fn), "matmul")


def test_scalar_operand_is_rejected():
    def fn(a, b):
        return graphc.matmul(a, b)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec((3, 4)), spec(()))
    assert_reported_at(ei.value, line_in(fn), "matmul")


@pytest.mark.parametrize("dtypes", [("float32", "float64"), ("int32", "int32"),
                                    ("int64", "float32")], ids=str)
def test_matmul_dtypes(dtypes):
    def fn(a, b):
        return a @ b
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((3, 4), dtypes[0]), spec((4, 2), dtypes[1]))
    assert_reported_at(ei.value, line_in(fn), "matmul")
