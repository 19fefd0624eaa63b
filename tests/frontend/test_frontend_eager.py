"""graphc functions called on NumPy arrays outside a trace run the reference at once,
with the same checks (and the same scalar handling) as in a trace."""
import inspect
import os

import numpy as np
import pytest

import graphc

TOL = {np.float32: 1e-5, np.float64: 1e-12}


def assert_close(got, want):
    want = np.asarray(want)
    assert isinstance(got, np.ndarray)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype)
    err = np.linalg.norm((got - want).ravel()) / np.linalg.norm(want.ravel())
    assert err < TOL[want.dtype.type], err


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eager_functions_match_numpy(rng, dtype):
    x = np.asarray(rng.standard_normal((3, 4)), dtype)
    w = np.asarray(rng.standard_normal((4, 2)), dtype)
    e = np.exp(x - x.max(-1, keepdims=True))
    assert_close(graphc.softmax(x, axis=-1), e / e.sum(-1, keepdims=True))
    assert_close(graphc.relu(x), np.maximum(x, 0))
    assert_close(graphc.scale(x, 0.5), x * dtype(0.5))
    assert_close(graphc.matmul(x, w), x @ w)
    assert_close(graphc.concat(x, x, axis=1), np.concatenate([x, x], axis=1))
    a, b = graphc.split(x, 2, axis=1)
    assert_close(a, x[:, :2])
    assert_close(b, x[:, 2:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eager_python_scalars_take_the_array_dtype(rng, dtype):
    x = np.asarray(rng.uniform(0.5, 2.0, (2, 3)), dtype)
    assert_close(graphc.add(x, 2.0), x + 2)
    assert_close(graphc.sub(1.0, x), 1 - x)
    assert_close(graphc.div(x, 4), x / 4)
    assert_close(graphc.maximum(x, 1.0), np.maximum(x, 1))


def test_eager_errors_name_the_line(rng):
    x = np.asarray(rng.standard_normal((3, 4)), np.float32)
    with pytest.raises(graphc.ShapeError) as err:
        line = inspect.currentframe().f_lineno + 1
        graphc.matmul(x, x)
    assert f"{os.path.basename(__file__)}:{line}" in str(err.value)
    with pytest.raises(graphc.TraceError):
        graphc.constant(x)
