"""Kernels with static loop extents and at most ``SERIAL_MAX_WORK`` statements of work are
compiled serial (handing work to a thread would cost more than the work); larger ones,
and symbolic ones, are rendered over a range of their row loop that the runtime splits
over its threads when the work is large enough. Same results as the float64 reference
either way."""
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
    """A large kernel is rendered serial over a range of its row loop, which the runtime
    splits over the threads (no OpenMP prange: one thread pool, faster compiles)."""
    assert numba_cpu.SERIAL_MAX_WORK < 1024 * 64
    src = kernel_sources(_check(rng, 1024))
    assert "range(_graphc_lo, _graphc_hi)" in src and "nb.prange(" not in src


def _split_ranges(exe):
    """Kernel name -> the ranges its loop ran as, from the executables' per-size state."""
    out = {}
    for sz in exe._sized.values():
        for (name, _), ranges in sz.memo.items():
            out.setdefault(name, []).append(ranges)
    return out


def test_symbolic_kernels_split_by_size(rng, monkeypatch):
    """A symbolic size can be large at run time: the loops are split over the threads
    at the sizes where the work pays for the hand-off (here 3 threads, on any machine,
    and a threshold of 4096 statements: S=700 rows in parts of 234, 234, 232), run whole
    on this thread at small sizes, and give the reference's results either way."""
    from graphc.backends.numba_cpu import threads
    monkeypatch.setattr(threads, "workers", lambda: 3)
    monkeypatch.setattr(threads, "SPLIT_MIN_WORK", 1 << 12)
    exe = check_fn(_layer, [spec(("S", 64), "float32"), spec((64,), "float32")],
                   [(randn(rng, (S, 64)), randn(rng, (64,)) + 2) for S in (1, 3, 700)])
    src = kernel_sources(exe)
    assert "range(_graphc_lo, _graphc_hi)" in src and "nb.prange(" not in src
    ranges = _split_ranges(exe)
    assert ranges and set(ranges) <= set(exe.splits)
    split = [r for rs in ranges.values() for r in rs if len(r) > 1]
    whole = [r for rs in ranges.values() for r in rs if len(r) == 1]
    assert split and whole                      # S=700 splits, S=1 does not
    for r in split:
        assert len(r) == 3 and r[0][0] == 0 and all(a[1] == b[0] for a, b in zip(r, r[1:]))


def test_split_runs_one_call_below_the_threshold_and_covering_parts_above(monkeypatch):
    from graphc.backends.numba_cpu import threads
    monkeypatch.setattr(threads, "workers", lambda: 3)
    calls = []

    def fn(tag, lo, hi):
        calls.append((tag, lo, hi))
    threads.split(fn, 10, threads.SPLIT_MIN_WORK - 1, "small")
    assert calls == [("small", 0, 10)]
    calls.clear()
    threads.split(fn, 10, threads.SPLIT_MIN_WORK, "big")
    assert sorted(calls) == [("big", 0, 4), ("big", 4, 8), ("big", 8, 10)]
    calls.clear()
    threads.split(fn, 2, threads.SPLIT_MIN_WORK * 10, "few")     # no more parts than rows
    assert sorted(calls) == [("few", 0, 1), ("few", 1, 2)]


def test_in_place_epilogue_reads_the_output(rng):
    """A GEMM epilogue computed in place (SwiGLU's silu(x @ Wg) * u) reads the GEMM's
    result from ``out`` itself, not from a second parameter that would be the same
    memory (a compiler falls back to scalar code for overlapping parameters)."""
    from graphc.lower.program import GemmStep
    from graphc.lower import loopir as L
    wg = randn(rng, (64, 96))
    exe = check_fn(lambda x, u: graphc.silu(x @ graphc.constant(wg, name="Wg")) * u,
                   [spec(("S", 64), "float32"), spec(("S", 96), "float32")],
                   [(randn(rng, (S, 64)), randn(rng, (S, 96))) for S in (1, 5, 300)])
    steps = [s for s in exe.program.steps if isinstance(s, GemmStep) and s.in_place]
    assert steps, exe.program
    for st in steps:
        names = [b.name for b in st.epilogue.buffers]
        assert "acc" not in names and "out" in names
        loads = {n.buf for n in L.walk(st.epilogue.body) if isinstance(n, L.Load)}
        assert "out" in loads and "acc" not in loads
