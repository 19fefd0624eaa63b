"""Kernels with static loop extents and at most ``SERIAL_MAX_WORK`` statements of work are
compiled serial (waking the OpenMP pool would cost more than their work); larger ones
keep their parallel loops. Same results as the float64 reference either way."""
import numpy as np

import graphc
from graphc import spec
from graphc.backends import numba_cpu
from numba_check import check_fn, kernel_sources, randn


def _layer(x, w):
    """rmsnorm, a row softmax, a GEMM with an epilogue, then an attention (scores scaled
    by 1/64 so that float32 rounding is not amplified by a sharp softmax)."""
    h = graphc.rmsnorm(x, w, eps=1e-6)
    y = graphc.softmax(h * 2.0, axis=-1) + graphc.relu(h @ graphc.constant(
        np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(64, 64), name="W"))
    return y, graphc.softmax(graphc.scale(y @ h.T, 1 / 64), axis=-1) @ h


def _check(rng, S):
    return check_fn(_layer, [spec((S, 64), "float32"), spec((64,), "float32")],
                    [(randn(rng, (S, 64)), randn(rng, (64,)) + 2)])


def test_static_small_kernels_are_serial(rng):
    src = kernel_sources(_check(rng, 4))
    assert "nb.prange(" not in src and "parallel=False" in src


def test_static_large_kernels_are_parallel(rng):
    assert numba_cpu.SERIAL_MAX_WORK < 1024 * 64
    assert "nb.prange(" in kernel_sources(_check(rng, 1024))


def test_symbolic_kernels_stay_parallel(rng):
    """A symbolic size can be large at run time: the loops stay parallel, and small
    sizes give the same results."""
    exe = check_fn(_layer, [spec(("S", 64), "float32"), spec((64,), "float32")],
                   [(randn(rng, (S, 64)), randn(rng, (64,)) + 2) for S in (1, 3, 700)])
    assert "nb.prange(" in kernel_sources(exe)
