"""The Numba backend's CPU threads: one set of workers for BLAS and the kernels.

Two thread pools on the same cores fight: OpenBLAS's workers keep spinning for a while
after each multi-threaded call, and Numba's OpenMP workers spin after each parallel
kernel, each taking a core the other wants. So the backend runs BLAS on one thread per
call and splits a large GEMM itself, over the calling thread and ``workers()`` - 1
helper threads (halves of the output columns, rows or batch), and its kernels are serial
Numba functions over a range of rows that :func:`split` cuts over the same threads.
Numba's OpenMP pool is left to the decode step's one-row GEMMs (templates.rows_gemm),
whose ~40 calls a step cannot pay the ~70 us hand-off to a Python helper.

While a numba executable runs, NumPy's BLAS runs on one thread (through threadpoolctl,
:func:`blas_enter` / :func:`blas_exit` around each call, counted across threads); between
calls it has the thread count it had, so the user's own NumPy work is not slowed."""
from __future__ import annotations

import functools
import math
import os
import queue
import threading

import numba
import numpy as np

from . import gemm

# Below this many multiply-adds a GEMM runs on the calling thread (handing half to a
# helper costs ~20-50 us).
SPLIT_MIN_MACS = 1 << 21

_blas = {"controllers": None, "original": None, "active": 0}
_blas_lock = threading.Lock()


def find_blas() -> None:
    """Find the BLAS libraries loaded now (NumPy's) through threadpoolctl, once (called
    when an executable is made; a few ms)."""
    if _blas["controllers"] is None:
        from threadpoolctl import ThreadpoolController
        _blas["controllers"] = [_Blas(c) for c in
                                ThreadpoolController().select(user_api="blas").lib_controllers]


class _Blas:
    """One BLAS library's thread count. threadpoolctl's OpenBLAS controller lets only
    the first Python thread that set the count change it again (others are ignored,
    silently); calls run on any thread, so the library's own setter is used where there
    is one. A BLAS threaded with OpenMP keeps a count per thread (``per_thread``)."""

    def __init__(self, controller):
        self.get = controller.get_num_threads
        self.set = getattr(controller, "_real_set_num_threads", controller.set_num_threads)
        self.per_thread = getattr(controller, "threading_layer", "") == "openmp"


_local = threading.local()      # per-thread counts saved (an OpenMP-threaded BLAS)


def _ours(per_thread: bool) -> list:
    return [c for c in _blas["controllers"] or () if c.per_thread == per_thread]


def blas_enter() -> None:
    """BLAS on one thread from now until the matching :func:`blas_exit`, ~2 us. A
    process-wide count (OpenBLAS with its own threads, MKL): the first of overlapping
    calls from several threads saves it, the last restores it. A per-thread count (an
    OpenMP BLAS): this thread's, saved and restored around its outermost call; the
    helper threads keep 1."""
    with _blas_lock:
        _blas["active"] += 1                 # first: an interrupted enter still exits
        if _blas["active"] == 1:
            ctls = _ours(False)
            _blas["original"] = [c.get() for c in ctls]
            for c, n in zip(ctls, _blas["original"]):
                if n != 1:
                    c.set(1)
    per = _ours(True)
    if per:
        depth = getattr(_local, "depth", 0)
        _local.depth = depth + 1
        if depth == 0:
            _local.saved = [c.get() for c in per]
            for c in per:
                c.set(1)


def blas_exit() -> None:
    per = _ours(True)
    if per and getattr(_local, "depth", 0) > 0:
        _local.depth -= 1
        if _local.depth == 0:
            for c, n in zip(per, _local.saved):
                c.set(n)
    with _blas_lock:
        if _blas["active"] <= 0:
            return
        _blas["active"] -= 1
        if _blas["active"] == 0 and _blas["original"] is not None:
            for c, n in zip(_ours(False), _blas["original"]):
                if n != 1:
                    c.set(n)
            _blas["original"] = None


@functools.cache
def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: ``taskset``, a container's
    cpuset), not the machine's count; read once (``os.cpu_count`` reads /sys on every
    call, ~10 us, and the cores do not change while we run)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                       # not on Linux
        return os.cpu_count() or 1


def workers() -> int:
    """Threads a split GEMM uses: Numba's current thread count (``NUMBA_NUM_THREADS``,
    ``numba.set_num_threads``), at most the cores this process may use."""
    return max(1, min(numba.get_num_threads(), usable_cores()))


class _Pool:
    """Helper threads that each run one task at a time from their own queue; every call
    gets its own completion queue, so a call that was interrupted (KeyboardInterrupt
    while waiting) leaves no stale completion behind for the next one."""

    def __init__(self):
        self._lock = threading.Lock()      # guards the list of helpers
        self._busy = threading.Lock()      # held by the caller whose tasks the helpers run
        self._queues: list[queue.SimpleQueue] = []

    def _helper(self, k: int) -> queue.SimpleQueue:
        with self._lock:
            while len(self._queues) <= k:
                todo = queue.SimpleQueue()
                threading.Thread(target=self._loop, args=(todo,), daemon=True,
                                 name=f"graphc-blas-{len(self._queues)}").start()
                self._queues.append(todo)
            return self._queues[k]

    @staticmethod
    def _loop(todo):
        for c in _ours(True):       # a helper's BLAS calls are one-thread parts
            c.set(1)
        while True:
            task, done = todo.get()
            try:
                task()
                done.put(None)
            except BaseException as e:      # re-raised in the caller
                done.put(e)

    def run(self, tasks) -> None:
        """Run ``tasks`` (callables) at once: the first on this thread, the others on
        helpers; return when all are done; raise the first error any of them raised.
        While another thread's tasks hold the helpers, run them all on this thread."""
        if not self._busy.acquire(blocking=False):
            for task in tasks:
                task()
            return
        try:
            helpers = [self._helper(k) for k in range(len(tasks) - 1)]
            done = queue.SimpleQueue()
            for todo, task in zip(helpers, tasks[1:]):
                todo.put((task, done))
            error = None
            try:
                tasks[0]()
            except BaseException as e:
                error = e
            for _ in helpers:
                e = done.get()
                if error is None and e is not None:
                    error = e
            if error is not None:
                raise error
        finally:
            self._busy.release()


_POOL = _Pool()


def _new_pool_in_child():
    """A forked child has no helper threads behind the inherited queues."""
    global _POOL
    _POOL = _Pool()


os.register_at_fork(after_in_child=_new_pool_in_child)


def run_parallel(tasks) -> None:
    """Run the callables ``tasks`` over the calling thread and helper threads."""
    if len(tasks) == 1:
        tasks[0]()
    else:
        _POOL.run(list(tasks))


# A kernel runs over the threads (:func:`split`) only when its work is at least this
# many element operations (loop-IR statements): handing a part to a helper thread and
# waiting for it costs ~70 us here (2 cores: two no-op tasks through
# run_parallel, median 68-83 us), the time of ~2^18-2^20 operations of a row kernel; a
# smaller one runs on the calling thread (at 2^16 the small softmax and score kernels of
# a decode step went 20 -> 80-110 us each).
SPLIT_MIN_WORK = 1 << 20


def ranges(n: int, work: int, k: int | None = None, align: int = 1) -> list:
    """How :func:`split` cuts 0..n: one contiguous range per thread (``k``, default
    :func:`workers`; boundaries on multiples of ``align``) when ``work`` is at least
    SPLIT_MIN_WORK, else the whole range [(0, n)]."""
    k = min(workers() if k is None else k, n) if work >= SPLIT_MIN_WORK else 1
    return parts(n, k, align) if k > 1 else [(0, max(n, 0))]


def split(fn, n: int, work: int, *args, align: int = 1) -> None:
    """``fn(*args, lo, hi)`` for the :func:`ranges` of 0..n: over the threads when
    ``work`` is at least SPLIT_MIN_WORK, else a single call ``fn(*args, 0, n)`` on this
    thread. The backend's kernels are serial Numba functions over such a range, run by
    the same threads as the GEMM splits."""
    run_ranges(fn, ranges(n, work, align=align), *args)


def run_ranges(fn, rs, *args) -> None:
    """``fn(*args, lo, hi)`` for each range of ``rs``, on this thread when there is one."""
    if len(rs) == 1:
        fn(*args, *rs[0])
    else:
        run_parallel([functools.partial(fn, *args, lo, hi) for lo, hi in rs])


def parts(n: int, k: int, align: int = 1) -> list[tuple[int, int]]:
    """``k`` contiguous ranges covering 0..n, boundaries on multiples of ``align``."""
    step = -(-n // k)
    step = -(-step // align) * align
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def _along(x: np.ndarray, out_ndim: int, d: int, lo: int, hi: int, size: int):
    """``x`` (an operand broadcast against an output of ``out_ndim`` dims) restricted to
    lo..hi of the output's batch dim ``d`` (whole when it broadcasts along it)."""
    xd = d - (out_ndim - x.ndim)
    if xd < 0 or xd >= x.ndim - 2 or x.shape[xd] != size:
        return x
    return x[(slice(None),) * xd + (slice(lo, hi),)]


def _rows(x: np.ndarray):
    """``x`` [..., m, K] as a [rows, K] view when its leading dims and rows merge
    without a copy, else None."""
    dims = [(n, s) for n, s in zip(x.shape[:-1], x.strides[:-1]) if n != 1]
    if not x.size or any(s1 != s2 * n2 for (_, s1), (n2, s2) in zip(dims, dims[1:])):
        return None
    return np.lib.stride_tricks.as_strided(
        x, (math.prod(x.shape[:-1]), x.shape[-1]),
        (dims[-1][1] if dims else x.strides[-2], x.strides[-1]))


def macs(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> int:
    """The multiply-adds of ``np.matmul(a, b, out=out)`` (a and b at least 2-D)."""
    return math.prod(out.shape[:-2]) * a.shape[-2] * b.shape[-1] * a.shape[-1]


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, split: bool = True) -> None:
    """``np.matmul(a, b, out=out)`` with large products split over :func:`workers`
    threads, each a one-thread BLAS call on its part: a batch dim when one has at least
    as many entries as threads, else the output columns, or the rows when the columns
    are few. ``split=False``: on this thread (one of several running sibling GEMMs)."""
    if a.ndim < 2 or b.ndim < 2:          # a vector: small, and NumPy's own semantics
        np.matmul(a, b, out=out)
        return
    m = a.shape[-2]
    batch = out.shape[:-2]
    big = macs(a, b, out) >= SPLIT_MIN_MACS      # (a small one: not worth the views)
    k = workers() if split and big else 1
    if big and a.ndim > 2 and b.ndim == 2:
        # [.., m, K] @ [K, n]: one GEMM over all the rows when they are one strided
        # block in a and in out (NumPy would run a GEMM per batch entry, packing b for
        # each, and the split below would take the batch dim)
        a2, o2 = _rows(a), _rows(out)
        if a2 is not None and o2 is not None:
            a, out, batch, m = a2, o2, (), a2.shape[0]
    n = b.shape[-1]
    if k == 1:
        gemm.matmul(a, b, out)
        return
    for d, size in enumerate(batch):
        if size >= k:
            def part(lo, hi, d=d, size=size):
                sl = (slice(None),) * d + (slice(lo, hi),)
                return lambda: gemm.matmul(_along(a, out.ndim, d, lo, hi, size),
                                           _along(b, out.ndim, d, lo, hi, size),
                                           out[sl])
            run_parallel([part(lo, hi) for lo, hi in parts(size, k)])
            return
    if n >= 64 * k:
        run_parallel([(lambda lo=lo, hi=hi: gemm.matmul(a, b[..., lo:hi], out[..., lo:hi]))
                      for lo, hi in parts(n, k, 16)])
    elif m >= 2 * k:
        run_parallel([(lambda lo=lo, hi=hi: gemm.matmul(a[..., lo:hi, :], b,
                                                        out[..., lo:hi, :]))
                      for lo, hi in parts(m, k)])
    else:
        gemm.matmul(a, b, out)
