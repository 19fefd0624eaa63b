"""The CuPy GPU backend: loop-IR kernels rendered to CUDA C, GEMMs on cuBLAS, a
flash-attention kernel, one device arena.

    exe = graphc.compile(graph, backend="cupy")                 # on an NVIDIA GPU
    exe = graphc.compile(graph, backend="cupy", emulate=True)   # the same CUDA C, on the CPU
    exe = graphc.compile(graph, backend="cupy-emu")             # the same, by name

Options: ``emulate`` (run the CUDA C through the CPU emulation harness, see emulate.py:
the way to debug GPU kernels without a GPU), ``device_outputs`` (return CuPy arrays and
leave them on the GPU; inputs may be CuPy arrays either way), ``progress``.

A program backend (graphc.runtime.backends): ``graphc.compile`` runs the passes and
lowers the graph; this module renders the Program to CUDA C and runs it.
"""
from __future__ import annotations

import os
import threading
import time
import warnings

from graphc.errors import BackendError
from graphc.ir.node import user_stacklevel
from graphc.lower.program import AttentionStep, LibraryStep
from graphc.passes.views import chain_shape
from graphc.runtime.backends import ProgramBackend

from . import library, nvrtc, render, templates
from .runtime import CupyExecutable


from graphc.errors import LibraryFallbackWarning  # noqa: E402,F401 (one class for all backends)


def gpu_available() -> tuple[bool, str]:
    """(True, device name) when CuPy sees a CUDA GPU, else (False, the reason)."""
    try:
        import cupy
    except Exception as e:
        return False, (f"CuPy is not installed ({type(e).__name__}: {e}); "
                       "pip install 'graphc[gpu]'")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return False, f"no CUDA GPU or driver ({type(e).__name__}: {e})"
    if n == 0:
        return False, "CUDA reports no GPU"
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return True, name.decode() if isinstance(name, bytes) else str(name)


def program_source(program, lib_plans=None):
    """(module source, {kernel name: CudaKernel}, [flash and library kernel names]) for a
    Program (``lib_plans``: its :func:`library.plans`, made here when not given)."""
    cuda = {k.name: render.render_kernel(k) for k in program.kernels}
    flash = {}
    for s in program.steps:
        if isinstance(s, AttentionStep):
            q = program.graph.nodes[s.operands[s.q.operand]]
            d = _last_dim(s.q, q)
            v = program.graph.nodes[s.operands[s.v.operand]]
            dv = _last_dim(s.v, v)
            key = (s.acc_dtype, d, dv)
            flash[templates.flash_name(*key)] = templates.flash_attention(*key)
    source = render.module_source(list(cuda.values()) + list(flash.values()))
    lib_names, lib_source = library.sources(
        library.plans(program) if lib_plans is None else lib_plans)
    return source + lib_source, cuda, list(flash) + lib_names


def _last_dim(view, node) -> int:
    d = chain_shape(node.type.shape, view.chain)[-1]
    if not isinstance(d, int):
        raise BackendError("cupy backend: an attention head dim must be a fixed size, "
                           f"not {d}", node=node.name)
    return d


class CupyBackend(ProgramBackend):
    name = "cupy"

    @staticmethod
    def compile_program(program, emulate: bool = False, device_outputs: bool = False,
                        progress: bool | None = None, **options):
        if options:
            raise BackendError(f"cupy backend: unknown options {sorted(options)}")
        if not emulate:
            ok, why = gpu_available()
            if not ok:
                raise BackendError(f"cupy backend: {why}. To run the same CUDA kernels on "
                                   "the CPU, compile with emulate=True")
        graph = program.graph
        lib_plans = library.plans(program)
        source, cuda, flash = program_source(program, lib_plans)
        fallback = sorted({s.body.nodes[s.body.outputs[0]].op for s in program.steps
                           if isinstance(s, LibraryStep) and lib_plans[s.node] is None})
        if fallback:
            warnings.warn(f"cupy backend: {', '.join(fallback)} run(s) through the NumPy "
                          "reference on the host (no CUDA kernel for them): correct, but slow "
                          "and copies to and from the GPU", LibraryFallbackWarning,
                          stacklevel=user_stacklevel())
        t0 = time.perf_counter()
        if emulate:
            from .emulate import EmulatedModule
            module = EmulatedModule(source)
        else:
            module = _raw_module(source)
        exe = CupyExecutable(graph, program, {k.name: k for k in program.kernels}, module,
                             cuda, flash, emulate, device_outputs)
        exe.library = library.bind(lib_plans, exe)
        exe.compile_seconds = time.perf_counter() - t0
        exe.source = source
        return exe


_IN_MEMORY_LOCK = threading.Lock()


def _raw_module(source: str):
    """The module compiled by NVRTC in this process. CuPy's own disk cache
    (``~/.cupy/kernel_cache``) is kept out of it (``CUPY_CACHE_IN_MEMORY=1`` around the
    compile): CuPy would load a cubin from there checked only by an md5 that anyone who
    can write the folder can forge, and graphc loads no file it has not sealed
    (graphc/cache.py). The price: each process compiles its GPU modules again (NVRTC,
    ~0.1 s for a small module)."""
    import cupy
    try:
        with _IN_MEMORY_LOCK:
            before = os.environ.get("CUPY_CACHE_IN_MEMORY")
            os.environ["CUPY_CACHE_IN_MEMORY"] = "1"
            try:
                module = cupy.RawModule(code=source, options=nvrtc.OPTIONS)
                module.compile()
            finally:
                if before is None:
                    del os.environ["CUPY_CACHE_IN_MEMORY"]
                else:
                    os.environ["CUPY_CACHE_IN_MEMORY"] = before
    except cupy.cuda.compiler.CompileException as e:
        raise BackendError(f"cupy backend: the generated CUDA C does not compile:\n{e}\n"
                           f"--- source ---\n{nvrtc.numbered(source)}") from None
    return module


class CupyEmulatedBackend(ProgramBackend):
    """``backend="cupy-emu"``: the cupy backend with ``emulate=True``, for places that take
    only a backend name (models' ``forward(..., backend=...)``, the command line)."""
    name = "cupy-emu"

    @staticmethod
    def compile_program(program, **options):
        options.setdefault("emulate", True)
        return CupyBackend.compile_program(program, **options)
