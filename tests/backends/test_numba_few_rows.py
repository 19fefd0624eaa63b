"""The few-row GEMM kernels of the Numba backend (templates.rows_gemm, templates.tiles_gemm)
against float64 at odd sizes: every branch of the tiles (four rows against four weight
rows, two rows, one; weight rows past the last whole group of four; a 16-row block cut
short), strided row operands, and the runtime's choice of kernel for a batched decode
step's shapes (a symbolic batch of sequences)."""
import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.backends.numba_cpu import runtime, templates
from graphc.backends.numba_cpu.cache import load_module
from numba_check import randn, rel_err

DTYPES = ["float32", pytest.param("float64", marks=pytest.mark.slow)]
TOL = {"float32": 1e-6, "float64": 1e-13}


def _ref(a, bt):
    return a.astype(np.float64) @ np.swapaxes(bt.astype(np.float64), -1, -2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiled_t_every_row_count_and_odd_widths(dtype, rng):
    """tiled_t: rows 1 to FEW_ROWS + 3 (4 + 4, 4 + 2 + 1, ...) against N weight rows
    not a multiple of 4 or 16 (and fewer than either), K odd and 1."""
    mod = load_module(templates.tiles_gemm(dtype))[0]
    for K in (37, 1):
        for N in (53, 18, 3):
            bt = randn(rng, (N, K), dtype)
            for B in range(1, runtime.FEW_ROWS + 4):
                a = randn(rng, (B, K), dtype)
                out = np.full((B, N), np.nan, dtype)
                mod.tiled_t(a, bt, out)
                assert rel_err(out, _ref(a, bt)) < TOL[dtype], (K, N, B)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_kernels_strided_rows(dtype, rng):
    """rows_batched on a strided view of the rows (a [B, M, K] that is another
    tensor's transpose, as a decode step's per-head query is), tiled_batched_t on each
    entry's own keys; M 1 to 9, N and K odd."""
    rows = load_module(templates.rows_gemm(dtype))[0]
    tiles = load_module(templates.tiles_gemm(dtype))[0]
    for M in (1, 2, 3, 5, 9):
        a = randn(rng, (M, 3, 37), dtype).transpose(1, 0, 2)        # [3, M, 37] strided
        assert M == 1 or not a.flags.c_contiguous
        b = randn(rng, (3, 37, 21), dtype)
        out = np.full((3, M, 21), np.nan, dtype)
        rows.rows_batched(a, b, out)
        assert rel_err(out, a.astype(np.float64) @ b.astype(np.float64)) < TOL[dtype], M
        bt = randn(rng, (3, 19, 37), dtype)
        out = np.full((3, M, 19), np.nan, dtype)
        tiles.tiled_batched_t(np.ascontiguousarray(a), bt, out)
        assert rel_err(out, _ref(a, bt)) < TOL[dtype], M


def test_batched_decode_shapes_take_the_few_row_kernels(rng, monkeypatch):
    """A batched decode step's products, B symbolic: x [B, 37] @ W.T (tiled_t for 2 to
    FEW_ROWS rows, rows_shared_t for one, BLAS above), per-head q [nh, B, 20] (a
    transposed view) @ per-head weights [nh, 20, 24] (rows_batched), and each sequence's
    heads [B, nh, 24] against its own keys [B, T, 24] transposed (tiled_batched_t; BLAS
    when one row per entry). Against float64."""
    nh = 3
    w = randn(rng, (45, 37))
    wq = randn(rng, (nh * 20, 45))
    per_head = randn(rng, (nh, 20, 24))

    def f(x, keys):
        h = x @ graphc.constant(w, name="W").T                                  # [B, 45]
        q = (h @ graphc.constant(wq, name="Wq").T).reshape(x.shape[0], nh, 20)
        ql = q.transpose(1, 0, 2) @ graphc.constant(per_head, name="per_head")   # [nh,B,24]
        return h, ql.transpose(1, 0, 2) @ keys.transpose(0, 2, 1)             # [B,nh,T]

    g = graphc.trace(f, spec(("B", 37)), spec(("B", "T", 24)))
    exe = graphc.compile(g, backend="numba")
    ref = graphc.compile(g, backend="reference", float64=True)
    calls = []
    real = exe.few_rows_module

    def spy(kind, dt):
        mod = real(kind, dt)

        class Spy:
            def __getattr__(self, name):
                fn = getattr(mod, name)
                return lambda *args: (calls.append((name, args[0].shape)), fn(*args))[1]
        return Spy()
    monkeypatch.setattr(exe, "few_rows_module", spy)
    for B in (1, 3, 8, 9):
        calls.clear()
        x, keys = randn(rng, (B, 37)), randn(rng, (B, 11, 24))
        for got, want in zip(exe(x, keys), ref(x, keys)):
            assert rel_err(got, want) < 1e-5, B
        names = {n for n, _ in calls}
        if B == 1:
            assert {"rows_shared_t", "rows_batched"} <= names and "tiled_t" not in names
        elif B <= runtime.FEW_ROWS:
            assert {"tiled_t", "rows_batched", "tiled_batched_t"} <= names, calls
        else:
            assert "tiled_t" not in names and "rows_shared_t" not in names, calls
