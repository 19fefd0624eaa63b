"""The float32 GEMM the Numba backend calls: oneDNN's ``dnnl_sgemm`` where the
``onednn-cpu-gomp`` wheel is installed (a dependency on Linux x86-64), NumPy's BLAS
otherwise and for every other dtype.

Why oneDNN (measured on the 2-core AVX-512 machine of docs/benchmarks.md, one thread per
call as the backend runs GEMMs, both ~the core's peak of ~110 GFLOP/s at best): with the
weight stored [K, N] (ONNX files, graphc's own models) it runs a Transformer's shapes
7-10% faster than OpenBLAS 0.3.31's SkylakeX kernel ([512, 768] x [768, 1152] 113
against 105 GFLOP/s, the attention's [2048, 64] x [64, 128] 110 against 99) and few-row
GEMMs 20-25% faster (a MoE expert's [64, 1024] x [1024, 2816] 114 against 91: OpenBLAS
packs the whole weight for few rows); with the weight stored [N, K] and read transposed
(PyTorch's ``x @ W.T``) the two are even, 100-106 GFLOP/s. Two one-thread calls side by
side on the two cores (the backend's split) lose less with it: halves of [512, 768] x
[768, 768] 208 against 141 GFLOP/s in all. oneDNN's own OpenMP team of two threads on a
whole GEMM was no faster than the halves with a [K, N] weight and slower with a
transposed one (175 against 199 GFLOP/s on [512, 1024] x [1024, 32000]^T), so the
backend keeps splitting GEMMs itself and every call here runs on one thread. ONNX
Runtime's MLAS and OpenVINO (oneDNN itself) are the peers it closes on.
``GRAPHC_GEMM=blas`` keeps NumPy's BLAS for every GEMM (to compare them).

:func:`matmul2d` computes ``out = a @ b`` for 2-D float32 operands whose rows or
columns are contiguous (any lead, so views into a fused projection or a cache need no
copy) into an ``out`` with contiguous rows, or answers False (the caller then uses
NumPy). oneDNN's OpenMP build sizes a call's team by the calling thread's OpenMP count:
it is set to 1 for the call and restored, so a call never starts threads of its own
beside the backend's."""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

_F32 = np.dtype(np.float32)
_lock = threading.Lock()
_state: dict = {}


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint),
                ("gpu_runtime", ctypes.c_uint)]


def _find_library() -> str | None:
    """The path of the installed wheel's libdnnl.so.3, or None."""
    import importlib.metadata as md
    try:
        dist = md.distribution("onednn-cpu-gomp")
    except md.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).endswith("libdnnl.so.3"):
            path = str(dist.locate_file(f))
            if os.path.exists(path):
                return os.path.realpath(path)
    return None


def _load():
    """The loaded library (its sgemm, the OpenMP thread setters it uses) or None: not
    installed, not wanted (``GRAPHC_GEMM=blas``), or failing to load (named in
    :func:`describe`)."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        lib, why = None, None
        choice = os.environ.get("GRAPHC_GEMM", "").strip().lower()
        if choice in ("blas", "numpy", "openblas"):
            why = f"GRAPHC_GEMM={choice}"
        elif choice not in ("", "onednn", "dnnl"):
            why = f"GRAPHC_GEMM={choice!r} is not one of onednn, blas (NumPy's BLAS used)"
        else:
            path = _find_library()
            if path is None:
                why = "onednn-cpu-gomp not installed"
            else:
                try:
                    lib = ctypes.CDLL(path)
                    L, P, F = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
                    lib.dnnl_sgemm.argtypes = [ctypes.c_char, ctypes.c_char, L, L, L, F,
                                               P, L, P, L, F, P, L]
                    lib.dnnl_sgemm.restype = ctypes.c_int
                    lib.dnnl_version.restype = ctypes.POINTER(_Version)
                    # the OpenMP runtime libdnnl itself resolved (dlsym through its handle)
                    lib.omp_get_max_threads.restype = ctypes.c_int
                    lib.omp_set_num_threads.argtypes = [ctypes.c_int]
                    v = lib.dnnl_version().contents
                    _state["version"] = f"{v.major}.{v.minor}.{v.patch}"
                    _state["isa"] = int(lib.dnnl_get_effective_cpu_isa())
                    _state["path"] = path
                except (OSError, AttributeError) as e:
                    lib, why = None, f"libdnnl failed to load: {e}"
        _state["lib"], _state["why"] = lib, why
        return lib


# dnnl_cpu_isa_t values (oneDNN 3.x dnnl_types.h) of the x86 ISAs its kernels target
_ISA = {0x1: "sse41", 0x3: "avx", 0x7: "avx2", 0x407: "avx2_vnni", 0x27: "avx512_core",
        0x67: "avx512_core_vnni", 0xe7: "avx512_core_bf16", 0x1ef: "avx512_core_fp16",
        0xfef: "avx512_core_amx"}


def _lib():
    """The loaded library or None, without the lock once :func:`_load` has decided."""
    return _state["lib"] if "lib" in _state else _load()


def available() -> bool:
    """Whether float32 GEMMs go through oneDNN."""
    return _lib() is not None


def describe() -> str:
    """One line: the GEMM float32 products use, e.g. ``oneDNN 3.2.0 sgemm
    (libdnnl.so.3, OpenMP, avx512_core_bf16 kernels) for float32; ...`` or ``NumPy's
    BLAS for every GEMM (onednn-cpu-gomp not installed)``."""
    if _lib() is not None:
        isa = _ISA.get(_state["isa"], hex(_state["isa"]))
        return (f"oneDNN {_state['version']} sgemm ({os.path.basename(_state['path'])}, "
                f"OpenMP, {isa} kernels) for float32; NumPy's BLAS for the rest")
    return f"NumPy's BLAS for every GEMM ({_state['why']})"


def _operand(x: np.ndarray):
    """(trans, lead) of a 2-D float32 operand with unit stride along one dim, as a
    row-major sgemm reads it, or None."""
    r, c = x.shape
    s0, s1 = x.strides
    if s1 == 4 and (s0 % 4 == 0 and s0 // 4 >= max(c, 1) or r == 1):
        return b"N", s0 // 4 if r > 1 else max(c, 1)
    if s0 == 4 and (s1 % 4 == 0 and s1 // 4 >= max(r, 1) or c == 1):
        return b"T", s1 // 4 if c > 1 else max(r, 1)
    return None


def _one_thread(lib):
    """The calling thread's OpenMP count set to 1 for the next call; the count to restore
    afterwards (None when it was 1)."""
    have = lib.omp_get_max_threads()
    if have == 1:
        return None
    lib.omp_set_num_threads(1)
    return have


def matmul2d(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """``out[...] = a @ b`` through oneDNN for 2-D float32 ``a`` [M, K], ``b`` [K, N],
    ``out`` [M, N] (rows or columns contiguous; out's rows contiguous, not overlapping
    the operands), on the calling thread alone. False (nothing done) where it does not
    apply: the caller runs NumPy."""
    lib = _lib()
    if (lib is None or a.dtype != _F32 or b.dtype != _F32 or out.dtype != _F32
            or a.ndim != 2 or b.ndim != 2 or out.ndim != 2):
        return False
    M, K = a.shape
    N = b.shape[1]
    if (M == 0 or N == 0 or K == 0 or out.strides[1] != 4 or out.strides[0] % 4
            or (M > 1 and out.strides[0] // 4 < N) or not out.flags.writeable
            or not (a.flags.aligned and b.flags.aligned and out.flags.aligned)):
        return False
    ta, tb = _operand(a), _operand(b)
    if ta is None or tb is None or np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return False
    ldc = out.strides[0] // 4 if M > 1 else N
    restore = _one_thread(lib)
    try:
        status = lib.dnnl_sgemm(ta[0], tb[0], M, N, K, 1.0, a.ctypes.data, ta[1],
                                b.ctypes.data, tb[1], 0.0, out.ctypes.data, ldc)
    finally:
        if restore is not None:
            lib.omp_set_num_threads(restore)
    if status != 0:          # dnnl_status_t: only invalid arguments, which are checked above
        raise RuntimeError(f"dnnl_sgemm failed (status {status}) for {a.shape} @ {b.shape} "
                           f"strides {a.strides} {b.strides} -> {out.strides}")
    return True


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``np.matmul(a, b, out=out)`` with each 2-D product through :func:`matmul2d`
    where it applies (a batch of them one by one, broadcast as NumPy does), NumPy
    otherwise."""
    if a.ndim == b.ndim == out.ndim == 2:
        if not matmul2d(a, b, out):
            np.matmul(a, b, out=out)
        return
    if (available() and a.ndim >= 2 and b.ndim >= 2 and out.dtype == _F32
            and out.ndim == max(a.ndim, b.ndim) and 0 < out[..., 0, 0].size <= 256):
        A = np.broadcast_to(a, out.shape[:-2] + a.shape[-2:])
        B = np.broadcast_to(b, out.shape[:-2] + b.shape[-2:])
        for i in np.ndindex(out.shape[:-2]):
            if not matmul2d(A[i], B[i], out[i]):
                np.matmul(A[i], B[i], out=out[i])
        return
    np.matmul(a, b, out=out)
