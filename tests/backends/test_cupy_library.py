"""The cupy backend's native library ops (backends/cupy_gpu/library.py: rope, topk, moe as
CUDA kernels, the MoE's expert GEMMs on cuBLAS) against their NumPy references, under the
CPU emulation of the CUDA C (every run) and on a GPU (``-m gpu``, skipped without one);
their source compiles with NVRTC for sm_80 and sm_90. No fallback warning may fire."""
import os
import warnings

import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.backends.cupy_gpu import LibraryFallbackWarning
from graphc.ops.moe import moe as moe_ref
from graphc.ops.rope import rope as rope_ref
from graphc.ops.selection import topk as topk_ref
from test_cupy_backend import mode, nvrtc_compiles  # noqa: F401 (mode: the fixture)


def compile_native(g, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("error", LibraryFallbackWarning)
        exe = graphc.compile(g, backend="cupy", emulate=mode == "emulated")
    steps = [s for s in exe.program.steps if type(s).__name__ == "LibraryStep"]
    assert steps and all(s.node in exe.library for s in steps)
    return exe


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("dtype,pos_dtype", [("float32", "int64"), ("float64", "int32")])
def test_rope(dtype, pos_dtype, rng, mode):
    inv = (10000.0 ** -(np.arange(0, 8, 2) / 8)).astype(dtype)
    positions = np.arange(3000, dtype=pos_dtype)

    def f(q, k):
        pos = graphc.constant(positions)[:q.shape[1]]
        return (graphc.rope(q, pos, graphc.constant(inv), scale=1.3),
                graphc.rope(k, pos, graphc.constant(inv), scale=1.3))
    exe = compile_native(graphc.trace(f, spec((3, "S", 8), dtype), spec(("S", 8), dtype)),
                         mode)
    tol = 1e-6 if dtype == "float32" else 1e-13
    for S in (0, 1, 7, 2900):         # positions up to 2899: large angles
        q = rng.standard_normal((3, S, 8)).astype(dtype)
        k = rng.standard_normal((S, 8)).astype(dtype)
        oq, ok = exe(q, k)
        if S == 0:
            assert oq.shape == (3, 0, 8) and ok.shape == (0, 8)
            continue
        assert rel(oq, rope_ref(q, positions[:S], inv, scale=1.3)) < tol
        assert rel(ok, rope_ref(k, positions[:S], inv, scale=1.3)) < tol
    nvrtc_compiles(exe)


@pytest.mark.parametrize("dtype,pos_dtype", [("float32", "int32"), ("float64", "int64")])
def test_rope_half_partial_per_sequence_positions(dtype, pos_dtype, rng, mode):
    """The rotate-half layout with partial rotary (rotary_dim 6 of an odd head dim 9) and
    per-sequence positions [B, S] on q [B, S, H, D] transposed to [B, H, S, D] (a strided
    view into the kernel); the interleaved layout with [1, S] positions beside it."""
    inv = (10000.0 ** -(np.arange(0, 6, 2) / 6)).astype(dtype)

    def f(q, p, p1):
        qt = q.transpose(0, 2, 1, 3)
        return (graphc.rope(qt, p, inv, scale=0.8, layout="half", rotary_dim=6),
                graphc.rope(qt, p1, inv, rotary_dim=6))
    exe = compile_native(graphc.trace(f, spec(("B", "S", 2, 9), dtype),
                                      spec(("B", "S"), pos_dtype), spec((1, "S"), pos_dtype)),
                         mode)
    tol = 1e-6 if dtype == "float32" else 1e-13
    for B, S in ((1, 1), (3, 7), (2, 300)):
        q = rng.standard_normal((B, S, 2, 9)).astype(dtype)
        p = rng.integers(0, 1000, (B, S)).astype(pos_dtype)
        p1 = rng.integers(0, 1000, (1, S)).astype(pos_dtype)
        oh, oi = exe(q, p, p1)
        qt = np.ascontiguousarray(q.transpose(0, 2, 1, 3))
        assert rel(oh, rope_ref(qt, p, inv, scale=0.8, layout="half", rotary_dim=6)) < tol
        assert rel(oi, rope_ref(qt, p1, inv, rotary_dim=6)) < tol
        np.testing.assert_array_equal(oh[..., 6:], qt[..., 6:])
    nvrtc_compiles(exe)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_topk_ties_nan_and_both_outputs(dtype, mode):
    g = graphc.trace(lambda x: graphc.topk(x, 3), spec(("N", 6), dtype))
    exe = compile_native(g, mode)
    x = np.array([[1, 5, 5, 2, 5, 0],             # ties go to the lower index
                  [np.nan, 1, 2, 3, np.nan, -1],  # NaN last
                  [-np.inf, np.inf, 0, 0, -1, 7],
                  [np.nan] * 6], dtype)
    vals, idx = exe(x)
    want_i = topk_ref(x, k=3, axis=1, output="indices")
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(vals, topk_ref(x, k=3, axis=1, output="values"))
    rng = np.random.default_rng(3)
    y = rng.integers(-3, 4, (700, 6)).astype(dtype)  # ties; more rows than threads
    np.testing.assert_array_equal(exe(y)[1], topk_ref(y, k=3, axis=1, output="indices"))
    nvrtc_compiles(exe)


@pytest.mark.parametrize("dtype,idx_dtype", [("float32", "int64"), ("float64", "int32")])
def test_moe(dtype, idx_dtype, rng, mode):
    """Sizes around nothing in particular: tokens 0, 1, 5 and 300; K=3 with a token
    sending two slots to one expert; some experts unused; an out-of-range index is an
    error."""
    E, H, I, K = 7, 20, 9, 3
    gate_up = rng.standard_normal((E, 2 * I, H)).astype(dtype)
    down = rng.standard_normal((E, H, I)).astype(dtype)
    g = graphc.trace(lambda x, w, i: graphc.moe(x, w, i, gate_up, down),
                     spec(("N", H), dtype), spec(("N", K), dtype), spec(("N", K), idx_dtype))
    exe = compile_native(g, mode)
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert exe(np.zeros((0, H), dtype), np.zeros((0, K), dtype),
               np.zeros((0, K), idx_dtype)).shape == (0, H)
    for N in (1, 5, 300):
        x = rng.standard_normal((N, H)).astype(dtype)
        w = rng.random((N, K)).astype(dtype)
        idx = np.argsort(rng.random((N, E)), axis=1)[:, :K].astype(idx_dtype)
        idx[0, 2] = idx[0, 0]                     # one expert twice for token 0
        idx[idx == 3] = 4                         # expert 3 unused
        want = moe_ref(x.astype(np.float64), w.astype(np.float64), idx,
                       gate_up.astype(np.float64), down.astype(np.float64))
        assert rel(exe(x, w, idx), want) < tol, N
    with pytest.raises(graphc.InputError, match=f"expert index {E} is out of range"):
        exe(x[:1], w[:1], np.array([[0, 1, E]], idx_dtype))
    nvrtc_compiles(exe)


def test_gpu_modules_bypass_cupys_disk_cache(monkeypatch):
    """graphc's GPU modules compile with CUPY_CACHE_IN_MEMORY=1 (CuPy's disk cache of
    cubins is checked only by md5; graphc loads no unsealed file), and the user's own
    setting is back afterwards. (A stand-in RawModule records the variable at compile
    time: no GPU is needed to check the wrapper.)"""
    cupy = pytest.importorskip("cupy")
    from graphc.backends import cupy_gpu
    seen = []

    class FakeModule:
        def __init__(self, code, options):
            self.code = code

        def compile(self):
            seen.append(os.environ.get("CUPY_CACHE_IN_MEMORY"))
    monkeypatch.setattr(cupy, "RawModule", FakeModule)
    for user in (None, "0"):
        if user is None:
            monkeypatch.delenv("CUPY_CACHE_IN_MEMORY", raising=False)
        else:
            monkeypatch.setenv("CUPY_CACHE_IN_MEMORY", user)
        mod = cupy_gpu._raw_module('extern "C" __global__ void k() {}')
        assert mod.code.startswith('extern "C"')
        assert os.environ.get("CUPY_CACHE_IN_MEMORY") == user
    assert seen == ["1", "1"]
