"""Compile CUDA C with NVRTC (``cupy.cuda.nvrtc``) to PTX, with no GPU needed.

The pip package ``nvidia-cuda-nvrtc`` (the ``gpu`` extra) ships the library; CuPy finds it.
Every kernel the renderer emits goes through :func:`compile_ptx` in the tests, for each
architecture in :data:`ARCHS`, so a kernel that would not build on a GPU fails on any
machine. A compile error raises :class:`graphc.errors.BackendError` with NVRTC's log and
the kernel source with line numbers.
"""
from __future__ import annotations

import functools

from graphc.errors import BackendError

ARCHS = ("sm_80", "sm_90")
OPTIONS = ("--std=c++17",)


def numbered(source: str) -> str:
    """``source`` with a line number before every line (the numbers NVRTC's log quotes)."""
    lines = source.splitlines()
    width = len(str(len(lines)))
    return "\n".join(f"{i + 1:>{width}} | {line}" for i, line in enumerate(lines))


@functools.lru_cache(maxsize=1)
def _nvrtc():
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # ImportError, or the library itself missing
        raise BackendError(
            "NVRTC is not available: the CUDA compile check needs CuPy and the NVRTC "
            "library (pip install 'graphc[gpu]', which installs cupy-cuda13x and "
            f"nvidia-cuda-nvrtc 13.0); import failed with: {type(e).__name__}: {e}") from None
    return nvrtc


def available() -> bool:
    try:
        _nvrtc()
        return True
    except BackendError:
        return False


def version() -> tuple[int, int]:
    return tuple(_nvrtc().getVersion())


def compile_ptx(source: str, arch: str = "sm_90", name: str = "kernel.cu",
                options=OPTIONS) -> str:
    """PTX for ``source`` compiled for ``arch`` ("sm_80", "sm_90", ...)."""
    nvrtc = _nvrtc()
    if not arch.startswith("sm_"):
        raise BackendError(f"architecture {arch!r}: expected e.g. 'sm_80'")
    opts = [f"--gpu-architecture=compute_{arch[3:]}", *options]
    prog = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError:
            log = nvrtc.getProgramLog(prog)
            if isinstance(log, bytes):
                log = log.decode(errors="replace")
            raise BackendError(f"NVRTC could not compile {name} for {arch}:\n{log.strip()}\n"
                               f"--- source ---\n{numbered(source)}") from None
        ptx = nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    return ptx.decode() if isinstance(ptx, bytes) else ptx
