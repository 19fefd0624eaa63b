"""Shared checks of the frontend tests: run a graph as traced, compare with NumPy."""
import numpy as np

import graphc

TOL = {np.float32: 1e-5, np.float64: 1e-12}


def compile_traced(g):
    """Run the graph exactly as traced (no passes), so a failure points at this layer."""
    return graphc.compile(g, level="O0")


def assert_close(got, want):
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if want.size:  # an empty selection has nothing to compare beyond shape and dtype
        err = np.linalg.norm((got - want).ravel()) / np.linalg.norm(want.ravel())
        assert err < TOL[want.dtype.type], err


def randn(rng, shape, dtype=np.float32):
    return np.asarray(rng.standard_normal(shape), dtype=dtype)
