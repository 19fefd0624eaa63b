"""The numba backend's float32 GEMM (backends/numba_cpu/gemm.py: oneDNN's sgemm where
installed): every layout it accepts against a float64 NumPy product, odd sizes, views
with leads, batches that broadcast, an output full of NaN (beta = 0 never reads it), and
the cases it must hand back to NumPy (overlap, other dtypes, no unit stride)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from graphc.backends.numba_cpu import gemm, threads

needs_onednn = pytest.mark.skipif(not gemm.available(), reason=gemm.describe())


def rel(got, a, b):
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    return np.linalg.norm(got.astype(np.float64) - ref) / np.linalg.norm(ref)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@needs_onednn
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 77, 129), (37, 53, 29), (130, 64, 257),
                                   (3, 1000, 5)])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_layouts_match_float64(M, K, N, ta, tb):
    rng = np.random.default_rng(M * 1000 + K + N)
    # a transposed operand is the .T view of a contiguous array; the other one a view
    # with a lead larger than its row (a slice of a wider array: a fused projection)
    a = rand(rng, K, M).T if ta else rand(rng, M, K + 7)[:, 3:3 + K]
    b = rand(rng, N, K).T if tb else rand(rng, K, N + 5)[:, :N]
    out = np.full((M, N + 3), np.nan, np.float32)[:, :N]
    assert gemm.matmul2d(a, b, out)
    assert np.isfinite(out).all()
    assert rel(out, a, b) < 1e-6


@needs_onednn
def test_batched_and_broadcast():
    rng = np.random.default_rng(1)
    a = rand(rng, 3, 1, 17, 24)
    b = np.swapaxes(rand(rng, 5, 19, 24), -1, -2)          # [5, 24, 19], transposed
    out = np.full((3, 5, 17, 19), np.nan, np.float32)
    gemm.matmul(a, b, out)
    assert rel(out, a, b) < 1e-6
    # through the backend's split (threads.matmul): rows merged into one 2-D product
    x, w = rand(rng, 4, 300, 256), rand(rng, 256, 520)
    y = np.full((4, 300, 520), np.nan, np.float32)
    threads.matmul(x, w, y)
    assert rel(y, x, w) < 1e-6


@needs_onednn
def test_declines_what_it_cannot_do_and_numpy_runs_it():
    rng = np.random.default_rng(2)
    a, b = rand(rng, 8, 8), rand(rng, 8, 8)
    assert not gemm.matmul2d(a, b, a)                       # out is an operand
    assert not gemm.matmul2d(a.astype(np.float64), b.astype(np.float64),
                             np.empty((8, 8)))
    assert not gemm.matmul2d(a[:, ::2], b[::2], np.empty((8, 8), np.float32))   # strided
    assert not gemm.matmul2d(a, b, np.empty((8, 8), np.float32).T)  # out column-major
    assert not gemm.matmul2d(np.empty((0, 8), np.float32), b, np.empty((0, 8), np.float32))
    # the wrapper still computes them (NumPy)
    out = np.empty((8, 4), np.float32)
    gemm.matmul(a[:, ::2], b[::2, :4], out)
    assert rel(out, a[:, ::2], b[::2, :4]) < 1e-6
    x = a.copy()
    gemm.matmul(x, b, x)                                     # NumPy copies on overlap
    assert rel(x, a, b) < 1e-6


@needs_onednn
def test_thread_count_of_the_caller_is_restored():
    """A call runs on one thread and leaves the caller's OpenMP count as it was."""
    lib = gemm._load()
    before = lib.omp_get_max_threads()
    rng = np.random.default_rng(3)
    a, b = rand(rng, 64, 64), rand(rng, 64, 64)
    try:
        lib.omp_set_num_threads(3)
        assert gemm.matmul2d(a, b, np.empty((64, 64), np.float32))
        assert lib.omp_get_max_threads() == 3
    finally:
        lib.omp_set_num_threads(before)


def test_blas_choice_is_named_and_honoured():
    """GRAPHC_GEMM=blas: every GEMM through NumPy's BLAS, and the benchmarks' report
    says so; a misspelt choice is named, not ignored."""
    code = ("from graphc.backends.numba_cpu import gemm; from graphc.timing import "
            "blas_report; print(gemm.available()); print(blas_report())")
    for choice, expect in [("blas", "GRAPHC_GEMM=blas"), ("mkl", "'mkl' is not one of")]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, GRAPHC_GEMM=choice), check=True).stdout
        assert out.splitlines()[0] == "False"
        assert expect in out and "GEMM (graphc numba): NumPy's BLAS" in out


@needs_onednn
def test_report_names_onednn():
    assert gemm.describe().startswith("oneDNN 3.")
