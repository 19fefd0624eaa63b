"""DeepSeek-V2 on the Numba backend: the native library ops (``moe``, ``rope``, ``topk`` in
``backends/numba_cpu/library.py``) against their NumPy references, the NumPy fallback
warning, and the tiny model's prefill and greedy decode against the float64 reference."""
import warnings

import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.backends.numba_cpu import library, threads
from graphc.lower.program import LibraryStep
from graphc.models import deepseek_v2 as dv
from graphc.ops.moe import moe as moe_ref
from graphc.ops.rope import rope as rope_ref
from graphc.ops.selection import topk as topk_ref


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def compile_quiet(g):
    """Compile for numba; fail if any opaque op is left to NumPy."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", library.LibraryFallbackWarning)
        exe = graphc.compile(g, backend="numba")
    steps = [s for s in exe.program.steps if isinstance(s, LibraryStep)]
    assert steps and all(s.node in exe.library for s in steps)
    return exe


def _moe_graph(rng, E, H, I, K, dtype):
    """moe over random experts [E, 2I, H] / [E, H, I] for N (symbolic) tokens, K each:
    (graph, gate_up, down)."""
    gate_up = rng.standard_normal((E, 2 * I, H)).astype(dtype)
    down = rng.standard_normal((E, H, I)).astype(dtype)
    g = graphc.trace(lambda x, w, i: graphc.moe(x, w, i, gate_up, down),
                     spec(("N", H), dtype), spec(("N", K), dtype), spec(("N", K), "int64"))
    return g, gate_up, down


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_moe_native_matches_reference(dtype):
    rng = np.random.default_rng(0)
    E, H, I, K = 6, 16, 8, 2
    g, gate_up, down = _moe_graph(rng, E, H, I, K, dtype)
    exe = compile_quiet(g)
    tol = 1e-6 if dtype == "float32" else 1e-13
    for N in (1, 3, 40, 2100):        # 2100 * K rows: the parallel kernels
        x = rng.standard_normal((N, H)).astype(dtype)
        w = rng.random((N, K)).astype(dtype)
        # distinct experts per token; some experts unused when N is small
        idx = np.argsort(rng.random((N, E)), axis=1)[:, :K].astype(np.int64)
        assert rel(exe(x, w, idx), moe_ref(x, w, idx, gate_up, down)) < tol, N
    bad = np.array([[0, E]], np.int64)
    with pytest.raises(graphc.InputError, match=f"expert index {E} is out of range"):
        exe(x[:1], w[:1], bad)


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_moe_few_rows_and_split_experts(dtype, rng):
    """The few-pairs path (decode: <= FEW_ROWS (token, expert) pairs, dot products over
    the expert weights in place), the sorted BLAS path just above it, and a size whose
    expert GEMMs are split over the threads, against the float64 reference: H and I not
    multiples of the 32-wide blocks, K = 6, a token sending two slots to one expert."""
    E, H, I, K = 9, 70, 45, 6
    g = _moe_graph(rng, E, H, I, K, dtype)[0]
    exe = compile_quiet(g)
    ref = graphc.compile(g, backend="reference", float64=True)
    tol = 1e-5 if dtype == "float32" else 1e-12
    few = library.FEW_ROWS // K
    split = -(-threads.SPLIT_MIN_MACS // (K * H * I))          # tokens to split experts
    assert library.FEW_ROWS >= K
    for N in (1, 2, few, few + 1, split + 3):
        x = rng.standard_normal((N, H)).astype(dtype)
        w = rng.random((N, K)).astype(dtype)
        idx = np.argsort(rng.random((N, E)), axis=1)[:, :K].astype(np.int64)
        idx[0, K - 1] = idx[0, 0]                   # one expert twice for token 0
        assert rel(exe(x, w, idx), ref(x, w, idx)) < tol, N
    with pytest.raises(graphc.InputError, match="expert index -1 is out of range"):
        exe(x[:1], w[:1], np.array([[0, 1, 2, 3, 4, -1]], np.int64))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_expert_parts_split_rows_evenly(workers, monkeypatch, rng):
    """The expert GEMMs' parts: every sorted row once, in order, within its expert's
    block; the same number of rows per part (to one), an expert at a cut split."""
    monkeypatch.setattr(threads, "workers", lambda: workers)
    counts = rng.integers(1, 90, 12)
    counts[[2, 7]] = 0                                  # unused experts
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    parts = library._expert_groups(offsets, threads.SPLIT_MIN_MACS)
    assert len(parts) == workers
    flat = [r for part in parts for r in part]
    rows = np.concatenate([np.arange(a, b) for _, a, b in flat])
    assert np.array_equal(rows, np.arange(offsets[-1]))
    for e, a, b in flat:
        assert counts[e] > 0 and offsets[e] <= a < b <= offsets[e + 1]
    sizes = [sum(b - a for _, a, b in part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    small = library._expert_groups(offsets, threads.SPLIT_MIN_MACS - 1)
    assert len(small) == 1 and len(small[0]) == 10      # one part, whole experts


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_rope_native_matches_reference(dtype):
    rng = np.random.default_rng(1)
    inv = (10000.0 ** -(np.arange(0, 8, 2) / 8)).astype(dtype)
    positions = np.arange(5000, dtype=np.int64)

    def f(q, k):
        pos = graphc.constant(positions)[:q.shape[1]]
        return (graphc.rope(q, pos, graphc.constant(inv), scale=1.3),
                graphc.rope(k, pos, graphc.constant(inv), scale=1.3))
    g = graphc.trace(f, spec((3, "S", 8), dtype), spec(("S", 8), dtype))
    exe = compile_quiet(g)
    tol = 1e-6 if dtype == "float32" else 1e-13
    for S in (1, 7, 4500):            # 3 * 4500 * 8 elements: the parallel kernel
        q = rng.standard_normal((3, S, 8)).astype(dtype)
        k = rng.standard_normal((S, 8)).astype(dtype)
        oq, ok = exe(q, k)
        assert rel(oq, rope_ref(q, positions[:S], inv, scale=1.3)) < tol
        assert rel(ok, rope_ref(k, positions[:S], inv, scale=1.3)) < tol


def test_topk_native_matches_reference_with_ties_and_nan():
    g = graphc.trace(lambda x: graphc.topk(x, 3), spec(("N", 6), "float32"))
    exe = compile_quiet(g)
    x = np.array([[1, 5, 5, 2, 5, 0],             # ties go to the lower index
                  [np.nan, 1, np.nan, -np.inf, 0, -1],   # NaN after everything
                  [np.nan] * 6,
                  [-0.0, 0.0, 3, 3, -1, 2]], np.float32)
    vals, idx = exe(x)
    np.testing.assert_array_equal(idx, topk_ref(x, k=3, axis=1, output="indices"))
    np.testing.assert_array_equal(vals, topk_ref(x, k=3, axis=1, output="values"))


def test_ops_without_native_code_warn_and_use_numpy(monkeypatch):
    """An opaque op missing from LIBRARY runs its NumPy reference; compile says so once,
    naming it."""
    monkeypatch.delitem(library.LIBRARY, "rope")
    inv = np.array([1.0, 0.1], np.float32)
    pos = np.arange(16)
    g = graphc.trace(lambda x: graphc.rope(x, graphc.constant(pos)[:x.shape[0]],
                                           graphc.constant(inv)) * 2.0,
                     spec(("S", 4), "float32"))
    with pytest.warns(library.LibraryFallbackWarning, match="rope") as caught:
        exe = graphc.compile(g, backend="numba")
    assert caught[0].filename == __file__          # the user's line, not graphc's
    with pytest.warns(library.LibraryFallbackWarning, match="rope") as caught:
        graphc.compile_many([g, g], backend="numba")
    assert caught[0].filename == __file__
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    assert rel(exe(x), 2 * rope_ref(x, pos[:5], inv)) < 1e-6


@pytest.fixture(scope="module")
def tiny():
    return dv.random(dv.preset("tiny"), seed=0)


@pytest.mark.slow       # the whole tiny model on numba; tests/models checks it on reference
def test_tiny_prefill_matches_float64_reference(tiny):
    ids = np.random.default_rng(3).integers(0, tiny.config.vocab_size, 37)
    with warnings.catch_warnings():
        warnings.simplefilter("error", library.LibraryFallbackWarning)
        out = tiny.forward(ids, backend="numba")
    assert rel(out, tiny.forward(ids, backend="reference", float64=True)) < 1e-5
    exe = tiny.compiled("forward", "numba")
    steps = [s for s in exe.program.steps if isinstance(s, LibraryStep)]
    assert {library.op_names(s) for s in steps} == {"rope", "topk", "moe"}
    assert all(s.node in exe.library for s in steps)       # all native


@pytest.mark.slow       # compiles the decode graph too; the prefill above stays quick
def test_tiny_decode_matches_float64_reference(tiny):
    prompt = np.random.default_rng(4).integers(0, tiny.config.vocab_size, 5)
    ids, logits = tiny.generate(prompt, 8, backend="numba", return_logits=True)
    want_ids, want = tiny.generate(prompt, 8, backend="reference", float64=True,
                                   return_logits=True)
    np.testing.assert_array_equal(ids, want_ids)
    assert rel(logits, want) < 1e-5
