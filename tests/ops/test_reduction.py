"""Reductions (sum, mean, max) and the row normalisations (softmax, layernorm, rmsnorm) on
the reference backend against NumPy written here; decompositions against the ops."""
import math

import numpy as np
import pytest

import graphc
from graphc import spec
from opcheck import (FLOATS, assert_matches, assert_reported_at, check, check_same,
                     concrete, line_in, next_line, positive, randn)

SIZES = [{"S": 1}, {"S": 4}]


def _fsum(x, axes, keepdims):
    """Exactly rounded sum along ``axes`` (math.fsum over moved-last axes)."""
    x = np.asarray(x, np.float64)
    rest = [k for k in range(x.ndim) if k not in axes]
    moved = np.transpose(x, rest + list(axes))
    flat = moved.reshape(moved.shape[:len(rest)] + (-1,))
    out = np.array([math.fsum(row) for row in flat.reshape(-1, flat.shape[-1])])
    out = out.reshape(moved.shape[:len(rest)])
    if keepdims:
        out = out.reshape(tuple(1 if k in axes else d for k, d in enumerate(x.shape)))
    return out


def _axes(axis, rank):
    if axis is None:
        return tuple(range(rank))
    axis = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % rank for a in axis))


def _count(shape, axes):
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def _max(x, axes, keepdims):
    out = x
    for a in sorted(axes, reverse=True):
        out = np.maximum.reduce(out, axis=a, keepdims=True)
    if not keepdims:
        out = out.reshape(tuple(d for k, d in enumerate(x.shape) if k not in axes))
    return out


REDUCE = {
    "sum": lambda x, axes, kd: _fsum(x, axes, kd),
    "mean": lambda x, axes, kd: _fsum(x, axes, kd) / _count(x.shape, axes),
    "max": _max,
}
REDUCE_CASES = [((6,), None), ((6,), 0), ((3, 4), None), ((3, 4), 0), ((3, 4), -1),
                ((2, 3, 4), (0, 2)), ((2, 3, 4), (-1, -3)), ((2, 3, 4), 1),
                (("S", 8), 0), (("S", 8), -1), (("S", 8), None), ((2, "S", 3), (1, 2))]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", REDUCE_CASES, ids=str)
@pytest.mark.parametrize("name", sorted(REDUCE))
def test_reduce_float(name, shape, axis, dtype, keepdims, rng):
    op = getattr(graphc, name)
    cases = [(randn(rng, concrete(shape, s), dtype),) for s in SIZES]
    red = REDUCE[name]
    check(lambda x: op(x, axis=axis, keepdims=keepdims), [spec(shape, dtype)], cases,
          lambda x: red(x, _axes(axis, x.ndim), keepdims), out_dtypes=[dtype],
          # A sum's rounding error scales with the sum of |x|, not with a result that
          # cancels to near zero.
          magnitude=lambda x: red(np.abs(x), _axes(axis, x.ndim), keepdims))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("name", ["sum", "max"])
@pytest.mark.parametrize("shape,axis", [((3, 4), None), ((3, 4), 1), (("S", 5), 0)], ids=str)
def test_reduce_int_keeps_dtype(name, shape, axis, dtype, rng):
    op = getattr(graphc, name)
    cases = [(rng.integers(-1000, 1000, concrete(shape, s)).astype(dtype),) for s in SIZES]

    def want(x):
        axes = _axes(axis, x.ndim)
        return (_fsum(x, axes, False) if name == "sum" else _max(x, axes, False)).astype(dtype)
    check(lambda x: op(x, axis=axis), [spec(shape, dtype)], cases, want, out_dtypes=[dtype])


def test_tensor_methods_reduce(rng):
    x = positive(rng, (3, 5))
    check(lambda x: (x.sum(), x.mean(axis=0), x.max(axis=-1, keepdims=True)),
          [spec((3, 5))], [(x,)],
          lambda x: (_fsum(x, (0, 1), False), _fsum(x, (0,), False) / 3,
                     _max(x, (1,), True)))


def _softmax(x, axis):
    # Through log-sum-exp, unlike the op's exp(x - max) / sum.
    m = np.max(x, axis=axis, keepdims=True)
    lse = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return np.exp(x - lse)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", [((7,), -1), ((3, 5), -1), ((3, 5), 0),
                                        ((2, 3, 4), 1), (("S", 8), -1), (("S", 8), 0),
                                        ((2, "S", "S"), -1)], ids=str)
def test_softmax(shape, axis, dtype, rng):
    cases = [(randn(rng, concrete(shape, s), dtype, scale=3),) for s in SIZES]
    check(lambda x: graphc.softmax(x, axis=axis), [spec(shape, dtype)], cases,
          lambda x: _softmax(x, axis), out_dtypes=[dtype])


def test_softmax_default_axis_is_last(rng):
    x = randn(rng, (3, 4))
    check(lambda x: graphc.softmax(x), [spec((3, 4))], [(x,)], lambda x: _softmax(x, -1))


def test_softmax_large_logits_stay_finite(rng):
    x = randn(rng, (4, 16), scale=200)
    x[0, :3] = [1e4, -1e4, 1e4]
    check(lambda x: graphc.softmax(x, axis=-1), [spec((4, 16))], [(x,)],
          lambda x: _softmax(x, -1))
    y = graphc.softmax(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


def _layernorm(x, w, b, eps):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * w + b


def _rmsnorm(x, w, eps):
    n = x.shape[-1]
    rms = np.linalg.norm(x, axis=-1, keepdims=True) / np.sqrt(n)
    return x / np.sqrt(rms ** 2 + eps) * w


NORM_SHAPES = [(4, 8), (2, 3, 8), ("S", 8), (8,), (2, "S", 16)]


@pytest.mark.parametrize("eps", [1e-5, 0.1, 0.0])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=str)
def test_layernorm(shape, dtype, eps, rng):
    d = shape[-1]
    cases = [(randn(rng, concrete(shape, s), dtype, scale=2) + 1, randn(rng, (d,), dtype),
              randn(rng, (d,), dtype)) for s in SIZES]
    check(lambda x, w, b: graphc.layernorm(x, w, b, eps=eps),
          [spec(shape, dtype), spec((d,), dtype), spec((d,), dtype)], cases,
          lambda x, w, b: _layernorm(x, w, b, eps), out_dtypes=[dtype])


@pytest.mark.parametrize("dtype", FLOATS)
def test_layernorm_default_eps_and_constant_params(dtype, rng):
    w, b = randn(rng, (8,), dtype), randn(rng, (8,), dtype)
    cases = [(randn(rng, (n, 8), dtype),) for n in (1, 3)]
    g = check(lambda x: graphc.layernorm(x, w, b), [spec(("S", 8), dtype)], cases,
              lambda x: _layernorm(x, w.astype(np.float64), b.astype(np.float64), 1e-5))
    assert len(g.constants) == 2


@pytest.mark.parametrize("eps", [1e-6, 0.5])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=str)
def test_rmsnorm(shape, dtype, eps, rng):
    d = shape[-1]
    cases = [(randn(rng, concrete(shape, s), dtype, scale=2), randn(rng, (d,), dtype))
             for s in SIZES]
    check(lambda x, w: graphc.rmsnorm(x, w, eps=eps), [spec(shape, dtype), spec((d,), dtype)],
          cases, lambda x, w: _rmsnorm(x, w, eps), out_dtypes=[dtype])


def test_rmsnorm_default_eps(rng):
    x, w = randn(rng, (3, 6)), randn(rng, (6,))
    check(lambda x, w: graphc.rmsnorm(x, w), [spec((3, 6)), spec((6,))], [(x, w)],
          lambda x, w: _rmsnorm(x, w, 1e-6))


# -- decompositions ---------------------------------------------------------------------

def _decomp_cases(rng, shape, dtype, n_params):
    d = shape[-1]
    return [(randn(rng, concrete(shape, s), dtype, scale=3) + 0.5,
             *(randn(rng, (d,), dtype) for _ in range(n_params))) for s in SIZES]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", [((3, 5), -1), ((3, 5), 0), (("S", 8), -1),
                                        ((2, "S", 4), 1)], ids=str)
def test_softmax_decomposition(shape, axis, dtype, rng):
    op = graphc.get_op("softmax")
    _, gd = check_same(lambda x: op(x, axis=axis), lambda x: op.decompose(x, axis=axis),
                       [spec(shape, dtype)], _decomp_cases(rng, shape, dtype, 0))
    assert "softmax" not in gd.op_counts()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("eps", [1e-5, 0.25])
@pytest.mark.parametrize("shape", [(3, 8), ("S", 8), (2, "S", 4)], ids=str)
def test_layernorm_decomposition(shape, eps, dtype, rng):
    op = graphc.get_op("layernorm")
    d = shape[-1]
    specs = [spec(shape, dtype), spec((d,), dtype), spec((d,), dtype)]
    _, gd = check_same(lambda x, w, b: op(x, w, b, eps=eps),
                       lambda x, w, b: op.decompose(x, w, b, eps=eps), specs,
                       _decomp_cases(rng, shape, dtype, 2))
    assert "layernorm" not in gd.op_counts()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("eps", [1e-6, 0.25])
@pytest.mark.parametrize("shape", [(3, 8), ("S", 8), (2, "S", 4)], ids=str)
def test_rmsnorm_decomposition(shape, eps, dtype, rng):
    op = graphc.get_op("rmsnorm")
    d = shape[-1]
    _, gd = check_same(lambda x, w: op(x, w, eps=eps), lambda x, w: op.decompose(x, w, eps=eps),
                       [spec(shape, dtype), spec((d,), dtype)],
                       _decomp_cases(rng, shape, dtype, 1))
    assert "rmsnorm" not in gd.op_counts()


# -- eager calls ------------------------------------------------------------------------

def test_eager_calls_return_numpy(rng):
    x, w, b = positive(rng, (3, 6)), randn(rng, (6,)), randn(rng, (6,))
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    for got, want in [(graphc.softmax(x, axis=-1), _softmax(x64, -1)),
                      (graphc.softmax(x, axis=0), _softmax(x64, 0)),
                      (graphc.layernorm(x, w, b), _layernorm(x64, w64, b64, 1e-5)),
                      (graphc.layernorm(x, w, b, eps=0.1), _layernorm(x64, w64, b64, 0.1)),
                      (graphc.rmsnorm(x, w), _rmsnorm(x64, w64, 1e-6)),
                      (graphc.sum(x, axis=1), _fsum(x64, (1,), False)),
                      (graphc.mean(x), _fsum(x64, (0, 1), False) / 18),
                      (graphc.max(x, axis=0, keepdims=True), _max(x64, (0,), True))]:
        assert type(got) is np.ndarray
        assert_matches(got, want, np.float32)
    x = randn(rng, (2, 5), "float64")
    assert_matches(graphc.softmax(x), _softmax(x, -1), np.float64)


def test_eager_sum_int32_keeps_int32(rng):
    x = rng.integers(-5, 5, (4, 3)).astype(np.int32)
    out = graphc.sum(x, axis=0)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [int(sum(int(v) for v in x[:, j])) for j in range(3)])


# -- errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [2, -3, 1.0, True, "0"])
def test_softmax_bad_axis(axis):
    def fn(x):
        return graphc.softmax(x, axis=axis)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3, 4)))
    assert_reported_at(ei.value, line_in(fn), "softmax")


def test_softmax_rejects_ints():
    def fn(x):
        return graphc.softmax(x)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((3, 4), "int64"))
    assert_reported_at(ei.value, line_in(fn), "softmax")


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis", [(0, -2), 2, (0, 5)])
def test_reduce_bad_axis(name, axis):
    op = getattr(graphc, name)

    def fn(x):
        return op(x, axis=axis)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3, 4)))
    assert_reported_at(ei.value, line_in(fn), name)


def test_mean_rejects_ints():
    def fn(x):
        return x.mean()
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((3,), "int32"))
    assert_reported_at(ei.value, line_in(fn), "mean")


def test_sum_rejects_bool():
    with pytest.raises(graphc.DTypeError) as ei:
        at = next_line()
        graphc.sum(np.array([True, False, True]))
    assert_reported_at(ei.value, at, "sum")


@pytest.mark.parametrize("wshape,bshape", [((4,), (8,)), ((8,), (1, 8)), ((8, 1), (8,))])
def test_layernorm_bad_param_shape(wshape, bshape):
    def fn(x, w, b):
        return graphc.layernorm(x, w, b)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec(("S", 8)), spec(wshape), spec(bshape))
    assert_reported_at(ei.value, line_in(fn), "layernorm")


def test_rmsnorm_param_dtype_must_match():
    def fn(x, w):
        return graphc.rmsnorm(x, w)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((2, 8), "float32"), spec((8,), "float64"))
    assert_reported_at(ei.value, line_in(fn), "rmsnorm")


@pytest.mark.parametrize("eps", [-1e-5, float("nan"), "small", None])
@pytest.mark.parametrize("name", ["layernorm", "rmsnorm"])
def test_norm_bad_eps(name, eps, rng):
    op = getattr(graphc, name)
    params = [randn(rng, (4,)) for _ in range(2 if name == "layernorm" else 1)]
    with pytest.raises(graphc.AttrError) as ei:
        at = next_line()
        op(randn(rng, (3, 4)), *params, eps=eps)
    assert_reported_at(ei.value, at, name)


def test_norm_rejects_ints():
    def fn(x, w):
        return graphc.rmsnorm(x, w)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((2, 8), "int32"), spec((8,), "int32"))
    assert_reported_at(ei.value, line_in(fn), "rmsnorm")


def test_unknown_attribute_names_line(rng):
    with pytest.raises(graphc.AttrError) as ei:
        at = next_line()
        graphc.softmax(randn(rng, (3, 4)), axs=1)
    assert_reported_at(ei.value, at, "softmax")
    assert "axs" in str(ei.value)
