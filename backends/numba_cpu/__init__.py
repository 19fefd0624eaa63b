"""The Numba CPU backend: loop-IR kernels rendered as serial ``numba.njit`` functions
over a range of their row loop (split over the backend's threads at run time), GEMMs on
BLAS with fused epilogues, blockwise attention, one preallocated arena.

    exe = graphc.compile(graph, backend="numba")

A program backend (graphc.runtime.backends): ``graphc.compile`` runs the passes and
lowers the graph; this module renders, compiles and loads the Program's kernels.
"""
from __future__ import annotations

import os
import time
from typing import NamedTuple

# BLAS runs on one thread per call, and the backend splits large GEMMs and its kernels
# over its own helper threads (threads.py). Numba's OpenMP pool is used only by the
# decode step's one-row GEMMs and few-pair MoE kernels (templates.rows_gemm, library.py):
# with GNU OpenMP (Numba's omp layer on Linux) its workers spin for a short while after
# a kernel (GOMP_SPINCOUNT iterations, tens of microseconds) and then sleep, so the next
# GEMV of a decode step finds them awake and a GEMM split after it loses little. Other
# OpenMP runtimes ignore it. Set before Numba starts its thread pool; a user's
# OMP_WAIT_POLICY or GOMP_SPINCOUNT wins (and a libgomp that torch loaded first has read
# the environment already).
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

from graphc.errors import BackendError
from graphc.lower import loopir as L
from graphc.lower.program import AttentionStep, GemmStep
from graphc.runtime.backends import ProgramBackend

from .cache import digest, load_module, precompile
from .library import bind_program
from .library import sources as library_sources
from .render import render_kernel, split_loop, work
from .runtime import NumbaExecutable
from .templates import attention_softmax, rows_gemm
from .threads import find_blas

class NumbaBackend(ProgramBackend):
    name = "numba"

    @staticmethod
    def compile_program(program, fastmath: bool = False, progress: bool | None = None,
                        **options):
        return NumbaBackend.compile_programs([program], fastmath, progress, **options)[0]

    @staticmethod
    def compile_programs(programs, fastmath: bool = False, progress: bool | None = None,
                         **options) -> list:
        """Executables for ``programs`` (lowered graphs): the kernel modules of all of
        them that are not in the cache yet compiled in one batch of worker processes
        (graphc.compile_many: a model's forward, prefill and decode), then loaded.
        ``compile_seconds`` of each executable: the batch's compile and load time."""
        if options:
            raise BackendError(f"numba backend: unknown options {sorted(options)}")
        plans = [_plan(p, fastmath) for p in programs]
        modules = list(dict.fromkeys(m for p in plans for m in p.modules))
        t0 = time.perf_counter()
        bar = _progress(len(modules), progress)
        try:
            # the modules not in the cache yet, compiled by worker processes in parallel
            compiled = precompile(modules, done=lambda: bar.update(1))
            seen = set(compiled)

            def load(src, kernel=False):
                h = digest(src)
                if h not in seen:
                    seen.add(h)
                    bar.update(1)
                mod, _ = load_module(src)
                return mod.kernel if kernel else mod
            exes = [_executable(plan, load) for plan in plans]
            bar.update(max(0, bar.total - bar.n))      # the library modules, and any a
        finally:                                       # worker left unfinished
            bar.close()
        find_blas()
        for exe in exes:
            exe.compile_seconds = time.perf_counter() - t0
        return exes


class _Plan(NamedTuple):
    """A Program and what its executable needs."""
    graph: object
    program: object
    kernels: dict             # name -> loop-IR kernel
    sources: dict             # name -> kernel module source
    softmax_dtypes: list      # attention score softmax modules
    row_dtypes: list          # one-row GEMM modules
    modules: list             # every module source to load


def _executable(plan: _Plan, load) -> NumbaExecutable:
    """The executable of a :func:`_plan`, its modules loaded through ``load``."""
    functions = {name: load(src, kernel=True) for name, src in plan.sources.items()}
    softmax = {dt: load(attention_softmax(dt)) for dt in plan.softmax_dtypes}
    rows = {dt: load(rows_gemm(dt)) for dt in plan.row_dtypes}
    exe = NumbaExecutable(plan.graph, plan.program, plan.kernels, functions, softmax, rows)
    # Opaque ops with a native implementation (library.py); the rest run their NumPy
    # reference, with a warning naming them.
    exe.library = bind_program(plan.program)
    exe.sources = plan.sources
    return exe


def _plan(program, fastmath: bool) -> _Plan:
    """What the executable of ``program`` needs: its kernels' sources and templates."""
    graph = program.graph
    for k in program.kernels:
        _serial_if_tiny(k)
    kernels = {k.name: k for k in program.kernels}
    sources = {name: render_kernel(k, fastmath) for name, k in kernels.items()}
    # One score-block softmax per attention dtype (a float64 graph keeps float64 scores).
    softmax_dtypes = sorted({s.acc_dtype for s in program.steps
                             if isinstance(s, AttentionStep)})
    # The one-row GEMMs (templates.rows_gemm) for the dtypes of GEMMs with one row (a
    # decode step); a symbolic row count that is few at run time loads them (and the
    # tiled ones, templates.tiles_gemm) at its first such call (runtime.few_rows_module).
    row_dtypes = sorted({s.acc_dtype for s in program.steps if isinstance(s, GemmStep)
                         and len(s.acc_shape) >= 2 and s.acc_shape[-2] == 1}
                        & {"float32", "float64"})
    modules = ([*sources.values()] + [attention_softmax(dt) for dt in softmax_dtypes]
               + [rows_gemm(dt) for dt in row_dtypes] + library_sources(program))
    return _Plan(graph, program, kernels, sources, softmax_dtypes, row_dtypes, modules)


# A kernel whose loops all have static extents and whose work (statements executed) is at
# most this runs on the calling thread: a hand-off to a helper thread would cost more
# than its work (a decode step is ~80 of them on one token). One with a split loop keeps
# it (threads.ranges gives it one range), so a decode step's kernel shares the module of
# the same computation over a prefill's S rows (render.function_sizes); its other
# parallel loops, and every parallel loop of a kernel without a split loop, become
# serial (not ``prange``). Larger or symbolic ones take a range the runtime splits.
SERIAL_MAX_WORK = 1 << 15


def _serial_if_tiny(kernel) -> None:
    statements = work(kernel.body)           # None: a symbolic extent
    if statements is not None and statements <= SERIAL_MAX_WORK \
            and split_loop(kernel) is None:
        for n in L.walk(kernel.body):
            if isinstance(n, L.Loop):
                n.parallel = False


def _progress(total, enabled):
    from tqdm.auto import tqdm
    # Shown only when compiling takes more than a moment (and on a terminal by default).
    return tqdm(total=total, desc="graphc: compiling kernels", unit="kernel",
                disable=(not enabled) if enabled is not None else None, delay=1.0,
                leave=False)
