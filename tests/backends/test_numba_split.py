"""The Numba backend's own threads (backends/numba_cpu/threads.py): GEMMs split over
helper threads, each a one-thread BLAS call, against a float64 product; errors from a
helper reach the caller; NumPy's BLAS runs on one thread once an executable exists; one
row against a weight stored [out, in] takes the Numba GEMV."""
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import graphc
from graphc import spec
from graphc.backends.numba_cpu import threads


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture
def three_workers(monkeypatch):
    """Three threads (an uneven split on any machine) and every product split."""
    monkeypatch.setattr(threads, "workers", lambda: 3)
    monkeypatch.setattr(threads, "SPLIT_MIN_MACS", 0)


CASES = {   # name: (shape of a, shape of b, transposed b view)
    "columns": ((37, 70), (70, 500), True),
    "rows (few columns)": ((90, 33), (33, 20), False),
    "batch": ((5, 17, 24), (5, 24, 19), False),
    "batch, shared b": ((4, 17, 24), (24, 30), True),
    "inner batch dim": ((1, 6, 9, 8), (1, 6, 8, 11), False),
    "one row": ((1, 64), (64, 300), True),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_split_matmul_matches(case, dtype, rng, three_workers):
    sa, sb, transposed = CASES[case]
    a = rng.standard_normal(sa).astype(dtype)
    b = rng.standard_normal(sb[:-2] + sb[:-3:-1]).astype(dtype).swapaxes(-1, -2) \
        if transposed else rng.standard_normal(sb).astype(dtype)
    out = np.full(np.broadcast_shapes(sa[:-2], sb[:-2]) + (sa[-2], sb[-1]), np.nan, dtype)
    threads.matmul(a, b, out)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert _rel(out, want) < (1e-6 if dtype == "float32" else 1e-14)


def test_split_into_strided_output(rng, three_workers):
    """Writing into a column block of a larger array (how attention writes its output)."""
    a, b = rng.standard_normal((3, 40, 16)), rng.standard_normal((3, 16, 50))
    big = np.zeros((3, 60, 50))
    threads.matmul(a, b, big[:, 10:50])
    assert _rel(big[:, 10:50], a @ b) < 1e-14
    assert not big[:, :10].any() and not big[:, 50:].any()


def test_split_from_several_threads(rng, three_workers):
    """Split GEMMs called from several threads at once (two executables used by two
    threads): each gets its own correct product."""
    import threading
    pairs = [(rng.standard_normal((40, 30)), rng.standard_normal((30, 300))) for _ in range(4)]
    wrong = []

    def worker(a, b):
        for _ in range(30):
            out = np.empty((40, 300))
            threads.matmul(a, b, out)
            if _rel(out, a @ b) > 1e-13:
                wrong.append(1)

    ts = [threading.Thread(target=worker, args=p) for p in pairs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not wrong


def test_helper_error_reaches_caller():
    def boom():
        raise ValueError("from a helper")
    done = []
    with pytest.raises(ValueError, match="from a helper"):
        threads.run_parallel([lambda: done.append(1), boom])
    assert done == [1]
    threads.run_parallel([lambda: done.append(2), lambda: done.append(3)])   # still usable
    assert sorted(done) == [1, 2, 3]


def _blas_threads():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_blas_on_one_thread_only_while_a_call_runs(rng):
    """NumPy's BLAS keeps its thread count after compiling and between calls; inside a
    call (seen from a GEMM step) it is one thread; overlapping calls from two threads
    keep it at one until the last ends."""
    import threading
    from threadpoolctl import threadpool_limits
    def ours():               # the BLAS libraries the backend found (NumPy's)
        return [c.get() for c in threads._blas["controllers"]]
    with threadpool_limits(limits=2, user_api="blas"):
        exe = graphc.compile(graphc.trace(lambda x: x @ x, spec((4, 4), "float32")),
                             backend="numba")
        before = ours()
        assert before and set(before) == {2} and set(_blas_threads()) == {2}
        seen, gate, go = [], threading.Event(), threading.Event()
        plain = exe.matmul

        def spy(a, b, out):
            seen.append(ours())
            if threading.current_thread() is not threading.main_thread():
                gate.set()                    # the other call is inside its GEMM step
                go.wait(5)
            plain(a, b, out)
        exe.matmul = spy
        x = rng.standard_normal((4, 4)).astype(np.float32)
        exe2 = graphc.compile(graphc.trace(lambda x: x @ x + 1.0, spec((4, 4), "float32")),
                              backend="numba")
        exe2.matmul = spy
        t = threading.Thread(target=exe2, args=(x,))
        t.start()
        assert gate.wait(5)
        got = exe(x)                          # overlaps the other thread's call
        assert ours() == [1] * len(before)     # the other call still runs
        go.set()
        t.join()
        assert ours() == before
        assert all(set(s) == {1} for s in seen) and len(seen) == 2
        assert np.allclose(got, x.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)
    threads.blas_enter()
    threads.blas_exit()
    assert threads._blas["active"] == 0


class _FakeBlas:
    """A BLAS thread count, process-wide or per thread (an OpenMP-threaded BLAS)."""

    def __init__(self, per_thread, n=4):
        import threading
        self.per_thread, self.n, self.local = per_thread, n, threading.local()

    def get(self):
        return getattr(self.local, "n", self.n) if self.per_thread else self.n

    def set(self, n):
        if self.per_thread:
            self.local.n = n
        else:
            self.n = n


def test_blas_counts_process_wide_and_per_thread(monkeypatch):
    """blas_enter/blas_exit: a process-wide count goes to 1 for as long as any thread is
    inside and back after the last; a per-thread count only for the entering thread
    (nested enters restore at the outermost exit); an exit without its enter (an
    interrupted call) does not drive the count below zero."""
    import threading
    glob, per = _FakeBlas(False), _FakeBlas(True)
    monkeypatch.setitem(threads._blas, "controllers", [glob, per])
    monkeypatch.setitem(threads._blas, "active", 0)
    threads.blas_enter()
    threads.blas_enter()                       # nested
    assert glob.get() == 1 and per.get() == 1
    seen = []
    t = threading.Thread(target=lambda: seen.append(per.get()))
    t.start()
    t.join()
    assert seen == [4]                         # another thread's own count is untouched
    threads.blas_exit()
    assert glob.get() == 1 and per.get() == 1
    inside, release = threading.Event(), threading.Event()

    def other():
        threads.blas_enter()
        inside.set()
        release.wait(5)
        threads.blas_exit()
    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(5)
    threads.blas_exit()                        # this thread's last exit
    assert per.get() == 4 and glob.get() == 1  # the other thread is still inside
    release.set()
    t.join()
    assert glob.get() == 4 and threads._blas["active"] == 0
    threads.blas_exit()                        # unmatched
    assert threads._blas["active"] == 0 and glob.get() == 4


def _spy(exe, dtype, calls):
    """Record (kernel name, rows of a) for each call of a one-row kernel of ``exe``."""
    mod = exe.rows[dtype]
    names = ["rows_shared", "rows_shared_t", "rows_batched"]
    exe.rows[dtype] = type("Spy", (), {
        n: staticmethod(lambda *a, n=n: (calls.append((n, a[0].shape[0])), getattr(mod, n)(*a)))
        for n in names})


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_one_row_gemms(dtype, rng):
    """A decode step's shapes, static: x [1, 70] @ W.T for W stored [45, 70] (a GEMV:
    rows_shared_t with one row),
    then per-head rows q [6, 1, 45] against per-head weights [6, 45, 20], a shared
    [45, 33] matrix and the transposed view of a [33, 45] one (the cache's keys); neither
    size a multiple of the 16-row blocks. Against the float64 reference."""
    w = rng.standard_normal((45, 70)).astype(dtype)
    per_head = rng.standard_normal((6, 45, 20)).astype(dtype)

    def f(x, cache):
        h = graphc.relu(x @ graphc.constant(w.T, name="W^T"))              # [1, 45]
        q = graphc.concat([h.reshape(1, 1, 45)] * 6, axis=0) * 0.5          # [6, 1, 45]
        return (q @ graphc.constant(per_head, name="per_head"),             # [6, 1, 20]
                q @ cache.T,                                                  # [6, 1, 33]
                graphc.softmax(q @ cache.T, axis=-1) @ cache)                # [6, 1, 45]

    g = graphc.trace(f, spec((1, 70), dtype), spec((33, 45), dtype))
    exe = graphc.compile(g, backend="numba")
    ref = graphc.compile(g, backend="reference", float64=True)
    calls = []
    _spy(exe, dtype, calls)
    x, cache = rng.standard_normal((1, 70)).astype(dtype), rng.standard_normal((33, 45)).astype(dtype)
    for got, want in zip(exe(x, cache), ref(x, cache)):      # float32: 1e-5 (a softmax)
        assert _rel(got, want) < (1e-5 if dtype == "float32" else 1e-13)
    assert {("rows_shared_t", 1), ("rows_batched", 6), ("rows_shared", 6),
            ("rows_shared_t", 6)} <= set(calls)
    assert not exe.tiles          # one-row steps never load the tiled module (~5 s cold)


def test_symbolic_rows_load_the_row_kernels_at_run_time(rng):
    """A symbolic row count: no one-row kernels are compiled with the graph; one row at
    run time loads them then (the one-row kernels, not the tiled ones), and the
    result matches float64."""
    w = rng.standard_normal((45, 70)).astype(np.float32)
    g = graphc.trace(lambda x: x @ graphc.constant(w.T, name="W^T"), spec(("M", 70), "float32"))
    exe = graphc.compile(g, backend="numba")
    assert not exe.rows
    x = rng.standard_normal((1, 70)).astype(np.float32)
    assert _rel(exe(x), x.astype(np.float64) @ w.T.astype(np.float64)) < 1e-6
    assert "float32" in exe.rows and not exe.tiles


def test_interrupted_split_leaves_no_stale_completion():
    """A KeyboardInterrupt while the caller waits for a helper: the next split still
    waits for its own helpers (a stale completion would let it return early)."""
    import _thread
    import time

    def interrupt_then_finish():
        time.sleep(0.05)
        _thread.interrupt_main()
        time.sleep(0.2)

    with pytest.raises(KeyboardInterrupt):
        threads.run_parallel([lambda: None, interrupt_then_finish])
    finished = []
    threads.run_parallel([lambda: None, lambda: (time.sleep(0.3), finished.append(1))])
    assert finished == [1]


def test_read_only_weights_take_blas(rng):
    """A read-only weight (a memory map, a frombuffer array) cannot go to the Numba
    kernels, whose signatures take writable arrays: BLAS instead, same result."""
    w = rng.standard_normal((45, 70)).astype(np.float32)
    w.setflags(write=False)
    g = graphc.trace(lambda x: x @ graphc.constant(w.T, name="W^T"), spec((1, 70), "float32"))
    exe = graphc.compile(g, backend="numba")
    x = rng.standard_normal((1, 70)).astype(np.float32)
    assert _rel(exe(x), x.astype(np.float64) @ w.T.astype(np.float64)) < 1e-6


def test_one_row_broadcast_against_per_head_weights(rng):
    """[1, 1, K] @ [H, K, N] broadcasts to [H, 1, N] (not a row per batch entry)."""
    w = rng.standard_normal((3, 8, 9)).astype(np.float32)
    g = graphc.trace(lambda x: x @ graphc.constant(w, name="w"), spec((1, 1, 8), "float32"))
    exe = graphc.compile(g, backend="numba")
    x = rng.standard_normal((1, 1, 8)).astype(np.float32)
    assert _rel(exe(x), x.astype(np.float64) @ w.astype(np.float64)) < 1e-6


def test_split_in_forked_child(rng, three_workers):
    """A forked child gets its own helper threads (the parent's do not exist there)."""
    import os
    import signal
    a, b = rng.standard_normal((40, 30)), rng.standard_normal((30, 300))
    pid = os.fork()
    if pid == 0:                                     # the child: never return to pytest
        code = 1
        try:
            signal.alarm(20)
            out = np.empty((40, 300))
            threads.matmul(a, b, out)
            code = 0 if _rel(out, a @ b) < 1e-13 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_threads_follow_the_cpu_affinity(monkeypatch):
    """A process allowed one core (taskset, a container's cpuset) splits no GEMM and
    compiles in-process, however many cores the machine has."""
    from graphc.backends.numba_cpu import cache
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.delenv("GRAPHC_COMPILE_JOBS", raising=False)
    threads.usable_cores.cache_clear()
    try:
        assert threads.usable_cores() == 1
        assert threads.workers() == 1
        assert cache.compile_jobs() == 1
    finally:
        threads.usable_cores.cache_clear()
