"""Timing helpers shared by the CLI (``graphc run`` / ``compare``) and the benchmarks."""
from __future__ import annotations

import os
import time

import numpy as np


def run_timed(fn, repeat: int):
    """(output, seconds of the first call of ``fn()``, median seconds of ``repeat`` more)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return out, first, float(np.median(times))


def decode_rate(generate, new_tokens: int, repeat: int) -> float:
    """Tokens/s of greedy decoding, ``generate(n)`` making n new tokens: the median over
    ``repeat`` rounds of ``new_tokens`` / (time of n = new_tokens + 1 - time of n = 1), so
    the prompt's prefill cancels out; NaN when ``new_tokens`` < 1."""
    if new_tokens < 1:
        return float("nan")
    generate(2)                                                  # warm-up
    rates = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        generate(1)
        t1 = time.perf_counter()
        generate(new_tokens + 1)
        t2 = time.perf_counter()
        rates.append(new_tokens / max((t2 - t1) - (t1 - t0), 1e-9))
    return float(np.median(rates))


# Environment variables that pick a BLAS library's kernel (or cap its instruction set)
# instead of letting it detect the CPU. A benchmark run under one compares against a
# handicapped NumPy/graphc while ONNX Runtime's MLAS and OpenVINO, which ignore them, run
# at full speed.
BLAS_KERNEL_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MKL_ENABLE_INSTRUCTIONS",
                   "MKL_DEBUG_CPU_TYPE", "MKL_CBWR")

# OpenBLAS's kernel names (threadpoolctl's "architecture") -> the widest vector ISA each uses.
_OPENBLAS_ISA = {
    "skylakex": "avx512", "cooperlake": "avx512", "sapphirerapids": "avx512",
    "haswell": "avx2", "zen": "avx2", "sandybridge": "avx", "bulldozer": "avx",
    "piledriver": "avx", "steamroller": "avx", "excavator": "avx",
    "nehalem": "sse", "core2": "sse", "penryn": "sse", "dunnington": "sse",
    "prescott": "sse", "atom": "sse", "barcelona": "sse", "opteron": "sse",
}


def cpu_isa() -> str | None:
    """The widest x86 vector ISA this CPU offers ('avx512', 'avx2', 'avx', 'sse'), from
    /proc/cpuinfo; None where that cannot be read (not Linux, not x86)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
            else:
                return None
    except OSError:
        return None
    for isa, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"),
                      ("sse", "sse2")):
        if flag in flags:
            return isa
    return None


def blas_libraries() -> list[dict]:
    """The BLAS libraries loaded in this process (NumPy's, and any other that threadpoolctl
    finds), as threadpoolctl describes them: internal_api, version, architecture (the
    kernel), num_threads, filepath (NumPy, imported above, has loaded its own). Empty
    without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [i for i in threadpool_info() if i.get("user_api") == "blas"]


def blas_warnings(libs: list[dict] | None = None) -> list[str]:
    """Why the BLAS in this process may not run at this CPU's speed: an environment
    variable that forces its kernel, or an OpenBLAS kernel narrower than the CPU's ISA."""
    libs = blas_libraries() if libs is None else libs
    out = [f"{k}={os.environ[k]} forces the BLAS kernel; unset it for this command: "
           f"env -u {k} ..." for k in BLAS_KERNEL_ENV if k in os.environ]
    isa = cpu_isa()
    order = ["sse", "avx", "avx2", "avx512"]
    for lib in libs:
        arch = str(lib.get("architecture") or "")
        used = _OPENBLAS_ISA.get(arch.lower())
        if lib.get("internal_api") == "openblas" and used and isa \
                and order.index(used) < order.index(isa):
            out.append(f"OpenBLAS runs its {arch} kernel ({used}) on a CPU with {isa}: "
                       "GEMMs run below this machine's peak")
    return out


def blas_summary(libs: list[dict] | None = None) -> str:
    """The BLAS libraries and their kernels in one line, e.g. ``openblas 0.3.31 (kernel
    SkylakeX, 2 threads, pthreads)``."""
    libs = blas_libraries() if libs is None else libs
    if not libs:
        return "none found (threadpoolctl missing, or NumPy without a BLAS)"
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} (kernel "
                     f"{i.get('architecture')}, {i.get('num_threads')} threads, "
                     f"{i.get('threading_layer')})" for i in libs)


def gemm_summary() -> str:
    """The GEMM graphc's numba backend runs float32 products with (oneDNN's sgemm where
    installed, else NumPy's BLAS; backends/numba_cpu/gemm.py), in one line."""
    from graphc.backends.numba_cpu import gemm
    return gemm.describe()


def blas_report() -> str:
    """One line naming each BLAS library and its kernel (e.g. ``BLAS: openblas 0.3.31
    (kernel SkylakeX, 2 threads)``), then a loud warning block for each reason it may be
    handicapped (:func:`blas_warnings`). Every benchmark prints it first."""
    libs = blas_libraries()
    text = "BLAS: " + blas_summary(libs) + "\nGEMM (graphc numba): " + gemm_summary()
    warnings = blas_warnings(libs)
    if warnings:
        bar = "!" * 78
        text += "\n" + "\n".join([bar] + [f"!!! WARNING: {w}" for w in warnings]
                                 + ["!!! numbers from this run understate NumPy and graphc "
                                    "against peers with their own GEMM", bar])
    return text
