"""Special values and sizes through every backend, against the reference: NaN in
maximum/minimum and max reductions, integer reductions past float64's 53 bits, empty
inputs (mean, max and softmax over an empty axis, rope of no rows) and unaligned input
arrays. Found by an edge-case sweep of the compiled backends against the reference."""
import warnings

import numpy as np
import pytest

import graphc
from graphc import spec

BACKENDS = ["reference", "numba", "cupy-emu"]


def run(fn, specs, *arrays, backend):
    exe = graphc.compile(graphc.trace(fn, *specs), backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # NumPy's mean of nothing
        return exe(*arrays)


def same(got, want):
    """Equal values, NaN where the reference has NaN, same dtype and shape."""
    assert got.dtype == want.dtype and got.shape == want.shape, (got, want)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_nan_propagates_through_maximum_minimum_and_max(backend):
    a = np.array([1, np.nan, np.nan, 2, -np.inf], np.float32)
    b = np.array([np.nan, 1, np.nan, -3, np.nan], np.float32)
    for fn in (graphc.maximum, graphc.minimum):
        for x, y in ((a, b), (b, a)):
            want = fn(x, y) * 1.0
            assert np.isnan(want[:3]).all() and np.isnan(want[4])
            same(run(lambda p, q: fn(p, q) * 1.0, [spec(("S",)), spec(("S",))], x, y,
                     backend=backend), want)
    rows = np.array([[np.nan, 1, 2], [1, np.nan, 2], [1, 2, np.nan], [1, 2, 3]], np.float32)
    same(run(lambda x: x.max(axis=-1), [spec(("S", 3))], rows, backend=backend),
         np.array([np.nan, np.nan, np.nan, 3], np.float32))
    same(run(lambda x: graphc.relu(x) * 1.0, [spec(("S",))],
             np.array([np.nan, -1, 2], np.float32), backend=backend),
         np.array([np.nan, 0, 2], np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_reductions_are_exact(backend):
    """int64 sums and maxima past 2**53 (a float64 accumulator rounds them); an int32
    sum wraps as the result dtype does (the reference: NumPy's sum in int32)."""
    big = np.array([2**53 + 1, 3, 2**53 - 7], np.int64)
    same(run(lambda x: x.max(), [spec(("S",), "int64")], big, backend=backend),
         np.array(2**53 + 1, np.int64))
    same(run(lambda x: x.sum(axis=0), [spec(("S",), "int64")], big, backend=backend),
         np.array(2**54 - 3, np.int64))
    same(run(lambda x: x.sum(axis=0), [spec(("S",), "int32")],
             np.full(4, 2**30, np.int32), backend=backend), np.array(0, np.int32))
    same(run(lambda x: x.max(axis=1), [spec(("S", 3), "int32")],
             np.array([[-5, -9, -7], [2**31 - 1, 0, 1]], np.int32), backend=backend),
         np.array([-5, 2**31 - 1], np.int32))


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_mean_of_nothing_is_nan(backend):
    x = np.zeros((0, 3), np.float32)
    for axis in (None, (0, 1), 0):
        for keepdims in (False, True):
            want = run(lambda t: t.mean(axis=axis, keepdims=keepdims), [spec(("S", 3))], x,
                       backend="reference")
            assert np.isnan(want).all()
            same(run(lambda t: t.mean(axis=axis, keepdims=keepdims), [spec(("S", 3))], x,
                     backend=backend), want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_over_an_empty_axis_is_an_input_error(backend):
    """max has no identity: NumPy raises, so every backend raises an InputError naming
    the op (the compiled ones returned -inf, or an arbitrary integer)."""
    for dtype in ("float32", "int32"):
        with pytest.raises(graphc.InputError, match=r"max\(\).*empty"):
            run(lambda t: t.max(axis=0), [spec(("S", 3), dtype)], np.zeros((0, 3), dtype),
                backend=backend)
    out = run(lambda t: t.max(axis=1), [spec(("S", 3))], np.zeros((0, 3), np.float32),
              backend=backend)
    assert out.shape == (0,)              # max along a non-empty axis: just no rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_over_an_empty_axis_is_empty(backend):
    x = np.zeros((0, 3), np.float32)
    same(run(lambda t: graphc.softmax(t, axis=0), [spec(("S", 3))], x, backend=backend), x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rope_of_no_rows(backend):
    inv = np.ones(4, np.float32)
    out = run(lambda x, p: graphc.rope(x, p, inv), [spec(("S", 8)), spec(("S",), "int64")],
              np.zeros((0, 8), np.float32), np.zeros(0, np.int64), backend=backend)
    assert out.shape == (0, 8) and out.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_unaligned_input_array(backend):
    buf = bytearray(3 * 8 * 4 + 1)
    x = np.ndarray((3, 8), np.float32, buffer=buf, offset=1)
    x[:] = np.arange(24, dtype=np.float32).reshape(3, 8)
    assert not x.flags.aligned
    same(run(lambda t: t * 2.0, [spec(("S", 8))], x, backend=backend), np.array(x) * 2)


def test_integer_reductions_compile_for_the_gpu():
    """The int64 accumulators' start value (-2**63 is not a C literal) under NVRTC."""
    from graphc.backends.cupy_gpu import nvrtc
    if not nvrtc.available():
        pytest.skip("NVRTC is not installed (pip install 'graphc[gpu]')")
    g = graphc.trace(lambda x: (x.max(axis=1), x.sum(axis=1)), spec(("S", 3), "int64"))
    exe = graphc.compile(g, backend="cupy-emu")
    assert "(-9223372036854775807LL - 1)" in exe.source
    for arch in nvrtc.ARCHS:
        assert ".entry" in nvrtc.compile_ptx(exe.source, arch)
