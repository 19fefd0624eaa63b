"""Reductions (sum, mean, max, min, argmax, argmin), the scan cumsum and the row
normalisations (softmax, layernorm, rmsnorm) on the reference backend against NumPy or
Python written here; decompositions against the ops; argmax / argmin / cumsum also on the
compiled backends (numba, cupy-emu), where their lowerings are hand-written loop IR."""
import math

import numpy as np
import pytest

import graphc
from graphc import spec
from opcheck import (assert_matches, assert_reported_at, check, check_compiled, check_same,
                     concrete, FLOATS, line_in, next_line, positive, randn)

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


def _min(x, axes, keepdims):
    return -_max(-np.asarray(x), axes, keepdims)


REDUCE = {
    "sum": lambda x, axes, kd: _fsum(x, axes, kd),
    "mean": lambda x, axes, kd: _fsum(x, axes, kd) / _count(x.shape, axes),
    "max": _max,
    "min": _min,
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
@pytest.mark.parametrize("name", ["sum", "max", "min"])
@pytest.mark.parametrize("shape,axis", [((3, 4), None), ((3, 4), 1), (("S", 5), 0)], ids=str)
def test_reduce_int_keeps_dtype(name, shape, axis, dtype, rng):
    op = getattr(graphc, name)
    cases = [(rng.integers(-1000, 1000, concrete(shape, s)).astype(dtype),) for s in SIZES]

    def want(x):
        axes = _axes(axis, x.ndim)
        return (_fsum(x, axes, False) if name == "sum" else REDUCE[name](x, axes, False)
                ).astype(dtype)
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


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "argmax", "argmin"])
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


# -- min, argmax, argmin, cumsum ---------------------------------------------------------





def _arg(x, axis, largest, keepdims=False):
    """NumPy's argmax / argmin in plain Python: the first extreme of each lane, the first
    NaN where a lane has one."""
    x = np.asarray(x)
    if axis is None:
        out = _arg(x.reshape(-1), 0, largest)
        return out.reshape((1,) * x.ndim) if keepdims else out
    moved = np.moveaxis(x, axis, -1)
    lanes = moved.reshape(-1, moved.shape[-1])
    out = []
    for lane in lanes:
        nans = [i for i, v in enumerate(lane) if v != v]
        best = 0
        for i, v in enumerate(lane):
            if (v > lane[best]) if largest else (v < lane[best]):
                best = i
        out.append(nans[0] if nans else best)
    out = np.array(out, np.int64).reshape(moved.shape[:-1])
    return np.expand_dims(out, axis) if keepdims else out


def _tied(rng, shape, dtype):
    """Few distinct values (many ties), none zero."""
    return (rng.integers(1, 4, shape) * np.where(rng.random(shape) < 0.5, -1, 1)).astype(dtype)


ARG_CASES = [((7,), 0), ((7,), None), ((3, 5), 0), ((3, 5), -1), ((3, 5), None),
             ((2, 3, 4), 1), (("S", 6), 0), (("S", 6), 1), ((2, "S", 3), None)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("dtype", FLOATS + ("int32", "int64"))
@pytest.mark.parametrize("shape,axis", ARG_CASES, ids=str)
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin(name, shape, axis, dtype, keepdims, rng):
    op = getattr(graphc, name)
    cases = []
    for s in [{"S": 1}, {"S": 5}]:
        cases.append((randn(rng, concrete(shape, s), dtype) if dtype in FLOATS
                      else rng.integers(-1000, 1000, concrete(shape, s)).astype(dtype),))
        cases.append((_tied(rng, concrete(shape, s), dtype),))
    check(lambda x: op(x, axis=axis, keepdims=keepdims), [spec(shape, dtype)], cases,
          lambda x: _arg(x, axis, name == "argmax", keepdims), out_dtypes=["int64"])


def test_argmax_first_occurrence_and_nan():
    x = np.array([[1, 3, 3, 2], [5, 5, 5, 5], [0.5, np.nan, 9, np.nan], [-1, -7, -7, 2]],
                 np.float32)
    np.testing.assert_array_equal(graphc.argmax(x, axis=1), [1, 0, 1, 3])
    np.testing.assert_array_equal(graphc.argmin(x, axis=1), [0, 0, 1, 1])
    np.testing.assert_array_equal(graphc.argmax(x, axis=0), [1, 2, 2, 2])
    assert graphc.argmax(x) == 9 and graphc.argmin(x) == 9      # the first NaN


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_argmax_argmin_compiled_ties_and_nan(dtype, rng):
    """Ties, NaN rows, every axis and the flattened form on numba and cupy-emu."""
    def fn(x):
        return (graphc.argmax(x, axis=-1), graphc.argmin(x, axis=0, keepdims=True),
                x.argmax(), graphc.argmin(x * 2.0 + 1.0, axis=1) + 1)

    def want(x):
        return (_arg(x, -1, True), _arg(x, 0, False, True), _arg(x, None, True),
                _arg(x * 2 + 1, 1, False) + 1)
    cases = []
    for n in (1, 6, 37):
        x = _tied(rng, (n, 9), dtype)
        cases.append((x.copy(),))
        x[rng.random((n, 9)) < 0.15] = np.nan
        cases.append((x,))
    check_compiled(fn, [spec(("S", 9), dtype)], cases, want)


@pytest.mark.slow       # the float32 ties-and-NaN test above compiles argmax too
def test_argmax_int_compiled(rng):
    def fn(x, y):
        return graphc.argmax(x, axis=1), graphc.argmin(y, axis=0), graphc.min(x, axis=1)
    cases = [(_tied(rng, (3, n, 4), "int32"),
              rng.integers(-2**62, 2**62, (n, 3)).astype(np.int64)) for n in (1, 7)]
    check_compiled(fn, [spec((3, "S", 4), "int32"), spec(("S", 3), "int64")], cases,
                   lambda x, y: (_arg(x, 1, True), _arg(y, 0, False), np.min(x, axis=1)))


def _cumsum(x, axis):
    """A running sum along ``axis`` in Python (float64, or exact ints wrapped to the
    input's width as an int32 sum does)."""
    x = np.asarray(x)
    moved = np.moveaxis(x, axis, -1)
    lanes = moved.reshape(-1, moved.shape[-1])
    out = np.zeros(lanes.shape, np.float64 if x.dtype.kind == "f" else object)
    for r, lane in enumerate(lanes):
        total = 0.0 if x.dtype.kind == "f" else 0
        for i, v in enumerate(lane):
            total += float(v) if x.dtype.kind == "f" else int(v)
            out[r, i] = total
    if x.dtype.kind != "f":
        bits = 8 * x.dtype.itemsize
        out = np.array([(int(v) + 2**(bits - 1)) % 2**bits - 2**(bits - 1)
                        for v in out.ravel()], x.dtype).reshape(lanes.shape)
    return np.moveaxis(out.reshape(moved.shape), -1, axis)


CUMSUM_CASES = [((7,), 0), ((3, 5), 0), ((3, 5), -1), ((2, 3, 4), 1), ((2, 3, 4), 0),
                (("S",), 0), (("S", 6), 0), (("S", 6), 1), ((2, "S", 3), 1)]


@pytest.mark.parametrize("dtype", FLOATS + ("int32", "int64"))
@pytest.mark.parametrize("shape,axis", CUMSUM_CASES, ids=str)
def test_cumsum(shape, axis, dtype, rng):
    cases = [(randn(rng, concrete(shape, s), dtype) if dtype in FLOATS
              else rng.integers(-1000, 1000, concrete(shape, s)).astype(dtype),)
             for s in SIZES]
    check(lambda x: graphc.cumsum(x, axis=axis), [spec(shape, dtype)], cases,
          lambda x: _cumsum(x, axis), out_dtypes=[dtype],
          magnitude=lambda x: _cumsum(np.abs(x), axis))


def test_cumsum_int32_keeps_int32_and_wraps(rng):
    x = rng.integers(2**29, 2**30, (4, 9)).astype(np.int32)     # the running sum overflows
    out = graphc.cumsum(x, axis=1)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, _cumsum(x, 1))
    check_compiled(lambda x: graphc.cumsum(x, axis=1), [spec((4, "S"), "int32")], [(x,)],
                   lambda x: _cumsum(x, 1))


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_cumsum_compiled(dtype, rng):
    """The scan on numba and cupy-emu: along the last, a middle and the first axis, a 1-D
    tensor (a kernel with no parallel loop: one block runs it on the GPU), with a fused
    prologue and epilogue."""
    def fn(x, v):
        return (graphc.cumsum(x, axis=-1), graphc.cumsum(x * 2.0, axis=1) + 1.0,
                x.cumsum(0), graphc.cumsum(v, axis=0), v.cumsum(0).reshape((-1, 1)) * v[:, None])

    def want(x, v):
        c = _cumsum(v, 0)
        return (_cumsum(x, -1), _cumsum(x * 2, 1) + 1, _cumsum(x, 0), c, (c * v)[:, None])
    cases = [(randn(rng, (3, n, 5), dtype), randn(rng, (2 * n + 1,), dtype))
             for n in (1, 4, 40)]
    check_compiled(fn, [spec((3, "S", 5), dtype), spec(("T",), dtype)], cases, want)


def test_tensor_methods_min_arg_cumsum(rng):
    x = randn(rng, (4, 6))
    check(lambda x: (x.min(), x.min(axis=0, keepdims=True), x.max(dim=1).indices,
                     x.min(dim=0).indices, x.argmax(dim=1, keepdim=True), x.argmin(),
                     x.cumsum(1), x.cumsum()),
          [spec((4, 6))], [(x,)],
          lambda x: (_min(x, (0, 1), False), _min(x, (0,), True), _arg(x, 1, True),
                     _arg(x, 0, False), _arg(x, 1, True, True), _arg(x, None, False),
                     _cumsum(x, 1), _cumsum(x.reshape(-1), 0)))
    values, indices = graphc.trace(lambda x: tuple(x.max(dim=0)), spec((4, 6))).output_types
    assert values.dtype == "float32" and indices.dtype == "int64"


def test_eager_min_arg_cumsum(rng):
    x = randn(rng, (3, 7))
    x64 = x.astype(np.float64)
    assert_matches(graphc.min(x, axis=1), _min(x64, (1,), False), np.float32)
    assert_matches(graphc.argmax(x, axis=0), _arg(x, 0, True), np.int64)
    assert_matches(graphc.argmin(x, axis=1, keepdims=True), _arg(x, 1, False, True), np.int64)
    assert_matches(graphc.cumsum(x, axis=0), _cumsum(x64, 0), np.float32)


# -- errors of min / argmax / argmin / cumsum -----------------------------------------------

@pytest.mark.parametrize("name", ["min", "argmax", "argmin"])
def test_min_arg_of_empty_axis(name, rng):
    op = getattr(graphc, name)

    def fn(x):
        return op(x, axis=1)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec((3, 0)))
    assert_reported_at(ei.value, line_in(fn), name)
    assert "empty" in str(ei.value) and "[3,0]" in str(ei.value)
    # a symbolic axis that is empty at call time
    exe = graphc.compile(graphc.trace(fn, spec((3, "S"))), backend="numba")
    assert exe(randn(rng, (3, 2))).shape == (3,)
    with pytest.raises(graphc.InputError) as ei:
        exe(randn(rng, (3, 0)))
    assert_reported_at(ei.value, line_in(fn), name)


@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_arg_tuple_axis_refused(name):
    op = getattr(graphc, name)

    def fn(x):
        return op(x, axis=(0, 1))
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3, 4)))
    assert_reported_at(ei.value, line_in(fn), name)
    assert "int or None" in str(ei.value)


@pytest.mark.parametrize("axis", [2, -3, 1.5, True, None, (0,)])
def test_cumsum_bad_axis(axis):
    def fn(x):
        return graphc.cumsum(x, axis=axis)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3, 4)))
    assert_reported_at(ei.value, line_in(fn), "cumsum")


def test_cumsum_needs_axis_and_refuses_bool():
    def fn(x):
        return graphc.cumsum(x)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3, 4)))
    assert_reported_at(ei.value, line_in(fn), "cumsum")
    assert "axis" in str(ei.value)
    with pytest.raises(graphc.DTypeError) as ei:
        at = next_line()
        graphc.cumsum(np.array([[True, False], [True, True]]), axis=0)
    assert_reported_at(ei.value, at, "cumsum")
    assert "bool" in str(ei.value) and "[2,2]" in str(ei.value)


def test_scan_after_a_block_reduction_compiled(rng):
    """A row that reduces and then scans (a cumulative distribution, cumsum(x) / sum(x)):
    on the GPU the sum is split across the block and the scan after it runs in order, not
    split (every thread carries the running total, thread 0 stores), on cupy-emu as on
    numba. A temporary op, so the renderer sees a Reduce and a scan in one row kernel."""
    from graphc.lower import loopir as L
    from graphc.ops import unregister_op
    from graphc.ops.reduction import _cumsum_infer

    def row(ctx):
        s = ctx.reduce("total", "+", ctx.ACC, lambda i: ctx.value(0, i))
        s.append(L.Assign("run", L.Const(0.0, ctx.ACC), ctx.ACC))

        def step(j):
            full = ctx.full(j)
            return [L.Assign("run", L.Bin("+", L.Var("run"), ctx.value(0, full)), ctx.ACC),
                    *ctx.finish(full, L.Cast(L.Bin("/", L.Var("run"), L.Var("total")),
                                             ctx.dtype))]
        return s + ctx.loops("j", step)

    try:
        @graphc.register_op("cdf_xyz", kind="reduction", infer=_cumsum_infer, lower_row=row)
        def cdf_xyz(x, *, axis):
            return np.cumsum(x, axis=axis) / np.sum(x, axis=axis, keepdims=True)

        def want(x, v):
            return _cumsum(x, 1) / x.sum(1, keepdims=True), _cumsum(v, 0) / v.sum()
        cases = [(positive(rng, (3, n, 4)), positive(rng, (n + 2,))) for n in (1, 5, 300)]
        check_compiled(lambda x, v: (cdf_xyz(x, axis=1), cdf_xyz(v, axis=0)),
                       [spec((3, "S", 4)), spec(("T",))], cases, want)
    finally:
        unregister_op("cdf_xyz")
