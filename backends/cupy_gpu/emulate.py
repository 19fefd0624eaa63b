"""Run CUDA C kernels on the CPU: the emulation harness for the CuPy backend's kernels.

The CUDA C source that would go to NVRTC is compiled, unchanged, with the system C++
compiler against a small header of our own (``cuda_emu.h``, force-included), loaded with
:mod:`ctypes`, and run block after block, the ``blockDim`` threads of each block as fibers
of the calling thread (each on a stack of its own, switched at every barrier: a few
nanoseconds, no system call; ``cxx_options=("-DGRAPHC_EMU_THREADS",)`` runs them as one
OpenMP team of OS threads instead). The call convention mirrors CuPy's ``RawModule``/``RawKernel``, so
code that launches kernels can take either::

    from graphc.backends.cupy_gpu.emulate import EmulatedModule

    mod = EmulatedModule(source)              # compiles (or loads from the cache)
    fn = mod.get_function("k_softmax")        # an extern "C" __global__ kernel of source
    fn((rows,), (256,), (x, y, np.int64(rows), np.int64(n)))   # NumPy arrays and scalars

Arrays are passed as pointers (they must be C-contiguous, aligned, of the parameter's
dtype, and writeable unless the parameter is ``const T*``); scalars by value (NumPy scalars
of the parameter's exact dtype; a Python int/float/bool counts as int64/float64/bool, as in
CuPy). Every mismatch raises :class:`graphc.errors.BackendError` naming the kernel and the
parameter.

Debugging GPU kernels on a laptop (no GPU, no CUDA toolkit needed, only g++ with OpenMP):

* run the kernel here on small NumPy inputs and compare with NumPy; a wrong index, a
  missing ``__syncthreads`` between writing and reading shared memory, a bad shuffle
  offset give wrong numbers here as on the GPU. A barrier or shuffle that not every thread
  of the block reaches (divergent control flow) is reported as an error naming the block
  and two threads, instead of hanging;
* ``printf`` works in kernels (from many threads at once: lines interleave);
* ``EmulatedModule(source, cxx_options=("-g", "-O0"))`` builds with debug info: run
  Python under ``gdb`` and break on the kernel's name; an out-of-bounds access crashes the
  process (there is no memory checker: the arrays are plain host memory);
* ``$CXX`` picks the compiler (on macOS e.g. Homebrew's ``g++-14``: Apple clang has no
  OpenMP); ``$GRAPHC_CACHE_DIR`` where compiled modules are kept.

What cannot be emulated:

* dynamic shared memory (``extern __shared__``, the ``shared_mem`` launch argument):
  rejected; use fixed-size ``__shared__`` arrays;
* warp-divergent shuffles, votes and ``__syncwarp``: here they are block barriers (every
  thread of the block writes its value to a scratch buffer, one barrier, each reads its
  partner's), so they must be reached by all threads of the block, which graphc's
  renderer guarantees; a violation is caught by the barrier count check. The ``mask``
  argument is ignored; a lane outside the block (a partial last warp) reads as the
  caller's own value;
* cooperative groups, ``__activemask``, ``clock()``, tensor cores (wmma/mma), textures,
  ``__half``/bfloat16, streams and events, and anything about timing, occupancy, register
  or shared-memory limits, bank conflicts, coalescing. Races between blocks cannot show:
  blocks run one after another (atomics are provided and exact), and races between the
  threads of a block show only as the ascending/descending orders above expose them;
* arithmetic is the host's IEEE arithmetic without FMA contraction and with glibc's libm,
  so results agree with the GPU's to rounding, not bit for bit; shared memory keeps its
  contents from the previous block (uninitialised on the GPU: never rely on either).

What happens at a barrier in divergent control flow (never a deadlock): ``__syncthreads``
is a barrier of the header's own among the threads still inside the kernel; a thread that
returns leaves it. If a thread's return completes a barrier that other threads wait at
(they reached a barrier it never will), those threads are unwound out of the kernel (a C++
exception thrown from the barrier, caught by the launcher), so nothing runs on past a
barrier that did not pair up. After each block the launcher compares how many barriers
each thread reached; if the counts differ, the launch stops with a BackendError naming
the kernel, the block and two threads with their counts. Threads that reach different
barrier *call sites* the same number of times are not caught (their barriers pair up, as
they do on sm_70+). A kernel that spins on a flag another thread sets would still hang.

Speed: a barrier costs each thread of the block one switch to the scheduler and back
(saved registers on x86-64; POSIX ``swapcontext`` elsewhere, which adds a system call).
The order the threads run in alternates between ascending and descending thread index
(from block to block and from barrier to barrier), so a read of another thread's
shared-memory write with no barrier between them gives a stale value in some block.
With ``-DGRAPHC_EMU_THREADS`` (OS threads, the older mode) each barrier costs every
thread a context switch (about 1.5 us per thread on 2 cores, 0.35 ms per
``__syncthreads`` at 256 threads), and the cost grows with the machine's load.

The compiled ``.so`` files are cached by the sha256 of header, source and compiler
command, in ``cuda-emu-<graphc version>`` under the Numba backend's cache root. Each is
sealed when written (graphc/cache.py); a cached file is read once, its seal checked, and
those bytes are loaded from a private copy; a file that fails is deleted and rebuilt with
one warning.
"""
from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import os
import re
import shlex
import subprocess
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import graphc
from graphc.errors import BackendError

from .nvrtc import numbered

# Emulated teams are often far larger than the machine's cores (256 threads on 2 cores).
# OpenMP workers that spin (at the start and end of each launch, and idle between
# launches) would steal the cores from the threads doing the work and from the caller.
# libgomp reads this when it is loaded (with the first compiled module, unless Numba or
# another library loaded it before); a user's own setting wins. The kernels' barriers
# never spin whatever this says: cuda_emu.h yields, then sleeps.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HEADER = Path(__file__).with_name("cuda_emu.h")
CXXFLAGS = ("-O2", "-std=c++17", "-fopenmp", "-fPIC", "-shared")  # IEEE: no -ffast-math
MAX_THREADS = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)

# C parameter types the launcher passes, as NumPy dtypes (after dropping const/volatile/
# __restrict__ and collapsing whitespace). LP64: long is 64 bits (checked against the
# compiler's sizeof at load time anyway).
CTYPE_DTYPES = {
    "float": "float32", "double": "float64", "bool": "bool",
    "int": "int32", "signed int": "int32", "signed": "int32", "int32_t": "int32",
    "unsigned int": "uint32", "unsigned": "uint32", "uint32_t": "uint32",
    "long long": "int64", "long long int": "int64", "signed long long": "int64",
    "long": "int64", "long int": "int64", "int64_t": "int64",
    "unsigned long long": "uint64", "unsigned long long int": "uint64",
    "unsigned long": "uint64", "uint64_t": "uint64", "size_t": "uint64",
    "short": "int16", "int16_t": "int16", "unsigned short": "uint16", "uint16_t": "uint16",
    "signed char": "int8", "int8_t": "int8", "unsigned char": "uint8", "uint8_t": "uint8",
}
_QUALIFIERS = {"const", "volatile", "__restrict__", "__restrict", "restrict"}


def cache_dir() -> Path:
    """``cuda-emu-<version>`` beside the Numba backend's cache folder: under
    ``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else ``~/.cache/graphc``."""
    from graphc.cache import cache_subdir
    return cache_subdir(f"cuda-emu-{graphc.__version__}")


def compiler() -> list[str]:
    """The compiler command: ``$CXX`` (may hold arguments, e.g. "ccache g++"), else g++."""
    return shlex.split(os.environ.get("CXX") or "g++")


# ---- reading the source ------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One kernel parameter as written in the source."""
    index: int
    name: str
    text: str              # as written, e.g. "const float* __restrict__ x"
    ctype: str             # normalized base type, e.g. "float", "long long"
    pointer: bool
    const: bool            # pointer to const

    @property
    def dtype(self) -> np.dtype | None:
        d = CTYPE_DTYPES.get(self.ctype)
        return None if d is None else np.dtype(d)

    def describe(self) -> str:
        return f"{'const ' if self.const else ''}{self.ctype}{'*' if self.pointer else ''}"


_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
# extern "C" <qualifiers> void [__launch_bounds__(..)] name(  -- the qualifiers must hold
# __global__ (__launch_bounds__ may also come before void)
_KERNEL = re.compile(r'\bextern\s*"C"\s+((?:\w+(?:\s*\([^()]*\))?\s+)*?)void\s+'
                     r'(?:__launch_bounds__\s*\([^()]*\)\s*)?(\w+)\s*\(')
_ANY_GLOBAL = re.compile(r"\b__global__\s+(?:\w+\s+)*?void\s+(\w+)\s*\(")
_EXTERN_SHARED = re.compile(r"\bextern\s+__shared__\b|\b__shared__\s+extern\b")
_TOKEN = re.compile(r"\*|&|\[|[A-Za-z_]\w*")


def strip_comments(source: str) -> str:
    # For parsing only (the compiler gets the source as written); strings are not
    # special-cased: kernels do not hold "//" in string literals in practice.
    return _COMMENT.sub(" ", source)


_TYPE_WORDS = {"int", "float", "double", "char", "bool", "long", "short", "unsigned", "signed",
               *(k for k in CTYPE_DTYPES if " " not in k)}


def _parse_param(index: int, text: str) -> Param:
    tokens = _TOKEN.findall(text)
    if "&" in tokens or "[" in tokens or tokens.count("*") > 1:
        return Param(index, f"arg{index}", text, text, False, False)  # unsupported
    words = [t for t in tokens if t != "*"]
    const = "const" in words
    words = [w for w in words if w not in _QUALIFIERS]
    # the last word is the parameter's name unless it is part of the type (unnamed)
    name = words.pop() if words and words[-1] not in _TYPE_WORDS else f"arg{index}"
    pointer = "*" in tokens
    return Param(index, name, text, " ".join(words), pointer, const and pointer)


def find_kernels(source: str) -> dict[str, list[Param]]:
    """The ``extern "C" __global__`` kernels of ``source`` and their parameter lists."""
    code = strip_comments(source)
    kernels = {}
    for m in _KERNEL.finditer(code):
        if "__global__" not in m.group(1).split():
            continue
        name = m.group(2)
        depth, i = 1, m.end()
        while i < len(code) and depth:
            depth += {"(": 1, ")": -1}.get(code[i], 0)
            i += 1
        inner = code[m.end():i - 1].strip()
        parts = [] if inner in ("", "void") else [p.strip() for p in inner.split(",")]
        kernels[name] = [_parse_param(k, p) for k, p in enumerate(parts)]
    return kernels


def _launchers(names) -> str:
    out = ['#line 1 "graphc_launchers"']
    for name in names:
        out.append(
            f'extern "C" int graphc_launch_{name}(const unsigned int* grid, '
            f'const unsigned int* block, void** args, char* err, int errlen) {{\n'
            f'  return graphc_emu::launch("{name}", {name}, grid, block, args, err, errlen);\n'
            f'}}\n'
            f'extern "C" int graphc_signature_{name}(int* kinds, int* sizes, int cap) {{\n'
            f'  return graphc_emu::signature({name}, kinds, sizes, cap);\n'
            f'}}')
    return "\n".join(out) + "\n"


# ---- compiling and loading -----------------------------------------------------------------

_LOADED: dict[str, ctypes.CDLL] = {}   # digest -> the loaded library, for the process
_LOCK = threading.Lock()


# ---- a precompiled header --------------------------------------------------------------
# Parsing cuda_emu.h and the C++ headers it includes is most of a small module's compile
# (0.5 of 0.8 s). From a process's second module on (per compiler command), the header is
# precompiled once (~1.3 s) into a private temporary folder (mode 0700, removed at exit:
# never in the shared cache, so nobody else can plant a .gch there) and every later
# module includes that copy, which g++ reads from its .gch (0.8 -> 0.3 s a module). The
# copy's text is the header's, so the cache digest (which hashes the header text and the
# canonical command) is unchanged; if the .gch cannot be built or used, g++ reads the
# copy's text, the same header.
_PCH: dict[tuple, Path | None] = {}    # compile command (no files) -> header copy, or None
_PCH_SEEN: dict[tuple, int] = {}       # modules compiled per command in this process


def _with_pch(cmd: list[str]) -> list[str]:
    """``cmd`` with its ``-include`` of the header replaced by a precompiled copy, once
    this process has compiled a module with the same command before (see above)."""
    try:
        at = cmd.index("-include")
    except ValueError:
        return cmd
    key = tuple(cmd)
    if key not in _PCH:
        _PCH_SEEN[key] = _PCH_SEEN.get(key, 0) + 1
        if _PCH_SEEN[key] < 2 or os.environ.get("GRAPHC_EMU_NO_PCH"):
            return cmd
        _PCH[key] = None
        folder = tempfile.mkdtemp(prefix="graphc-emu-pch-")          # mode 0700
        import atexit
        import shutil
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        copy = Path(folder) / HEADER.name
        copy.write_text(HEADER.read_text())
        flags = [c for c in cmd[:at] if c != "-shared"]
        try:
            proc = subprocess.run([*flags, "-x", "c++-header", str(copy),
                                   "-o", str(copy) + ".gch"], capture_output=True)
            if proc.returncode == 0:
                _PCH[key] = copy
        except OSError:
            pass
    copy = _PCH[key]
    return cmd if copy is None else [*cmd[:at + 1], str(copy), *cmd[at + 2:]]


def _compile(text: str, cmd: list[str], out: Path, source: str, name: str) -> bytes:
    """Compile ``text`` and store the library sealed at ``out`` (graphc/cache.py); returns
    the library's bytes (what the caller loads: not the file, which others may change)."""
    from graphc.cache import write_sealed
    with tempfile.TemporaryDirectory(prefix="graphc-emu-") as tmp:   # mode 0700
        src = Path(tmp) / "kernel.cu"
        src.write_text(text)
        lib = Path(tmp) / "kernel.so"
        full = [*_with_pch(cmd), str(src), "-o", str(lib)]
        try:
            proc = subprocess.run(full, capture_output=True, text=True)
        except OSError as e:  # FileNotFoundError, PermissionError
            raise BackendError(
                "CUDA emulation needs a C++ compiler with OpenMP (g++, or set CXX to "
                f"one); could not run {cmd[0]!r}: {e}") from None
        if proc.returncode != 0:
            log = (proc.stdout + proc.stderr).strip()
            hint = ""
            if "omp.h" in log or "fopenmp" in log:
                hint = ("\n(the compiler seems to lack OpenMP: CUDA emulation needs g++ "
                        "with OpenMP, or set CXX to a compiler that has it)")
            raise BackendError(f"CUDA emulation: {cmd[0]} could not compile {name}:\n"
                               f"{log}{hint}\n--- source ---\n{numbered(source)}")
        payload = lib.read_bytes()
    write_sealed(out, payload)  # atomic: a concurrent loader sees no file or a whole one
    return payload


@dataclass(frozen=True)
class _Build:
    text: str          # what the compiler gets: the source, the launchers, the digest
    cmd: tuple         # the compiler command, without the input and output files
    digest: str
    path: Path         # the cached library


def _build(source: str, name: str, cxx_options=()) -> _Build:
    header = HEADER.read_text()
    body = f'#line 1 "{name}"\n{source}\n{_launchers(find_kernels(source))}'
    cmd = (*compiler(), *CXXFLAGS, *cxx_options, "-include", str(HEADER), "-x", "c++")
    digest = hashlib.sha256("\0".join([header, body, " ".join(cmd)]).encode()).hexdigest()
    # The digest is compiled in and checked on load: a stale or foreign file is rebuilt.
    text = body + f'extern "C" const char graphc_emu_digest[] = "{digest}";\n'
    return _Build(text, cmd, digest, cache_dir() / f"m_{digest[:32]}.so")


def library_path(source: str, *, cxx_options=(), name: str = "kernel.cu") -> Path:
    """Where the compiled library for ``source`` is (or would be) cached."""
    return _build(source, name, tuple(cxx_options)).path


def _open(payload: bytes, digest: str, folder: Path) -> ctypes.CDLL | None:
    """The library ``payload`` (checked bytes) if it loads and was built for ``digest``,
    else None. It is loaded from a private copy (mode 0600, made with O_EXCL in the
    checked cache folder, removed once loaded), so the bytes the loader maps are the
    bytes checked, and no one can change them under the mapping."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".load-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        try:
            lib = ctypes.CDLL(tmp)
        except OSError:
            return None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    try:
        stored = ctypes.c_char.in_dll(lib, "graphc_emu_digest")
        if ctypes.string_at(ctypes.addressof(stored), 64).decode() == digest:
            return lib
    except (ValueError, UnicodeDecodeError):
        pass
    if hasattr(_ctypes, "dlclose"):
        _ctypes.dlclose(lib._handle)
    return None


_BAD = ("does not load or does not match its source (corrupt or modified: its seal "
        "does not match)")


def _load(source: str, name: str, cxx_options) -> tuple[ctypes.CDLL, Path, bool]:
    """(library, its path, whether it came from a cache: the process's or the disk's)."""
    from graphc.cache import discard, read_sealed
    b = _build(source, name, cxx_options)
    with _LOCK:
        lib = _LOADED.get(b.digest)
        if lib is not None:
            return lib, b.path, True
        # read once and checked; a file that fails is deleted with one warning
        payload = read_sealed(b.path, "CUDA emulation module", _BAD)
        lib = _open(payload, b.digest, b.path.parent) if payload is not None else None
        cached = lib is not None
        if payload is not None and lib is None:     # sealed by us, yet not this module
            discard(b.path, "CUDA emulation module", _BAD)
        if lib is None:
            payload = _compile(b.text, list(b.cmd), b.path, source, name)
            lib = _open(payload, b.digest, b.path.parent)
            if lib is None:
                raise BackendError(f"CUDA emulation: the module just compiled to {b.path} "
                                   "does not load")
        _LOADED[b.digest] = lib
        return lib, b.path, cached


# ---- the module and its kernels ------------------------------------------------------------

class EmulatedModule:
    """CUDA C ``source`` compiled for the CPU (like ``cupy.RawModule(code=source)``).

    ``cxx_options``: extra compiler flags (e.g. ``("-g", "-O0")`` to debug in gdb); part of
    the cache key. ``name``: the file name compiler messages use.
    """

    def __init__(self, source: str, *, cxx_options=(), name: str = "kernel.cu"):
        code = strip_comments(source)
        if _EXTERN_SHARED.search(code):
            raise BackendError(
                "CUDA emulation does not support dynamic shared memory (extern __shared__); "
                "declare __shared__ arrays of a fixed size\n--- source ---\n"
                + numbered(source))
        self.source = source
        self.kernels = find_kernels(source)
        self._lib, self.path, self.cached = _load(source, name, tuple(cxx_options))
        self._functions: dict[str, EmulatedKernel] = {}

    def get_function(self, name: str) -> "EmulatedKernel":
        fn = self._functions.get(name)
        if fn is not None:
            return fn
        if name not in self.kernels:
            plain = set(_ANY_GLOBAL.findall(strip_comments(self.source)))
            if name in plain:
                raise BackendError(f"CUDA emulation: kernel {name!r} is not declared "
                                   f'extern "C" (its name is mangled); declare it '
                                   f'extern "C" __global__ void {name}(...)')
            known = ", ".join(sorted(self.kernels)) or "none"
            raise BackendError(f"CUDA emulation: no extern \"C\" __global__ kernel named "
                               f"{name!r} in the module (kernels: {known})")
        fn = self._functions[name] = EmulatedKernel(self, name, self.kernels[name])
        return fn


def _dims(what: str, value) -> tuple[int, int, int]:
    if isinstance(value, (int, np.integer)):
        value = (value,)
    try:
        dims = tuple(int(v) for v in value)
        if any(not isinstance(v, (int, np.integer)) for v in value):
            raise TypeError
    except TypeError:
        raise BackendError(f"CUDA emulation: {what} must be an int or a tuple of up to 3 "
                           f"ints, got {value!r}") from None
    if not 1 <= len(dims) <= 3:
        raise BackendError(f"CUDA emulation: {what} must have 1 to 3 dims, got {value!r}")
    return dims + (1,) * (3 - len(dims))


# kinds reported by graphc_emu::signature: pointer to int / float, int / float scalar
_KIND_NAMES = {0: "pointer to integer", 1: "pointer to floating", 2: "integer",
               3: "floating"}


class EmulatedKernel:
    """One kernel of an :class:`EmulatedModule` (like ``cupy.RawKernel``)."""

    def __init__(self, module: EmulatedModule, name: str, params: list[Param]):
        self.module, self.name, self.params = module, name, params
        lib = module._lib
        try:
            self._launch = getattr(lib, f"graphc_launch_{name}")
            signature = getattr(lib, f"graphc_signature_{name}")
        except AttributeError:
            raise BackendError(f"CUDA emulation: kernel {name!r} has no launcher in "
                               f"{module.path}") from None
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                 ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
                                 ctypes.c_int]
        # Check our reading of the parameter list against the compiler's.
        cap = 256
        kinds, sizes = (ctypes.c_int * cap)(), (ctypes.c_int * cap)()
        n = signature(kinds, sizes, cap)
        if n != len(params):
            raise BackendError(f"kernel {name}: read {len(params)} parameters from the "
                               f"source, the compiler sees {n}")
        for p in params:
            dt = p.dtype
            if dt is None:
                continue  # reported when the kernel is called
            kind = (0 if dt.kind in "iub" else 1) + (0 if p.pointer else 2)
            if (kinds[p.index], sizes[p.index]) != (kind, dt.itemsize):
                raise BackendError(
                    f"kernel {name}, parameter {p.index} ({p.text!r}): read as {p.describe()}"
                    f", but the compiler sees a {_KIND_NAMES.get(kinds[p.index], 'other')} "
                    f"type of {sizes[p.index]} bytes")

    def __repr__(self):
        return f"<EmulatedKernel {self.name}({', '.join(p.text for p in self.params)})>"

    def _error(self, p: Param, msg: str) -> BackendError:
        return BackendError(f"kernel {self.name}, parameter {p.index} ({p.name}, "
                            f"{p.describe()}): {msg}")

    def __call__(self, grid, block, args, *, shared_mem: int = 0,
                 enable_cooperative_groups: bool = False) -> None:
        if shared_mem:
            raise BackendError(f"kernel {self.name}: CUDA emulation does not support "
                               f"dynamic shared memory (shared_mem={shared_mem})")
        if enable_cooperative_groups:
            raise BackendError(f"kernel {self.name}: CUDA emulation does not support "
                               "cooperative groups")
        g, b = _dims("grid", grid), _dims("block", block)
        nthreads = b[0] * b[1] * b[2]
        if not 1 <= nthreads <= MAX_THREADS or any(not 1 <= v <= m for v, m in zip(b, MAX_BLOCK)):
            raise BackendError(f"kernel {self.name}: block {b} is not a valid CUDA block "
                               f"(1 to {MAX_THREADS} threads, each dim at most {MAX_BLOCK})")
        if any(not 1 <= v <= m for v, m in zip(g, MAX_GRID)):
            raise BackendError(f"kernel {self.name}: grid {g} is not a valid CUDA grid "
                               f"(each dim 1 to {MAX_GRID})")
        if not isinstance(args, (tuple, list)):
            raise BackendError(f"kernel {self.name}: args must be a tuple, got "
                               f"{type(args).__name__}")
        if len(args) != len(self.params):
            raise BackendError(f"kernel {self.name} takes {len(self.params)} arguments, "
                               f"got {len(args)}")
        keep = []  # the objects argv points into, alive until the call returns
        argv = (ctypes.c_void_p * max(1, len(args)))()
        for p, a in zip(self.params, args):
            dt = p.dtype
            if dt is None:
                raise self._error(p, f"CUDA emulation cannot pass a parameter declared "
                                     f"{p.text!r}")
            if p.pointer:
                if not isinstance(a, np.ndarray):
                    raise self._error(p, f"expected a NumPy {dt} array, got "
                                         f"{type(a).__name__}")
                if a.dtype != dt:
                    raise self._error(p, f"expected a {dt} array, got a {a.dtype} array")
                if not a.flags.c_contiguous or not a.flags.aligned:
                    raise self._error(p, "the array must be C-contiguous and aligned "
                                         "(np.ascontiguousarray)")
                if not p.const and not a.flags.writeable:
                    raise self._error(p, "the array is read-only but the parameter is not "
                                         "const (the kernel may write it)")
                holder = ctypes.c_void_p(a.ctypes.data)
                keep.append(holder)
                argv[p.index] = ctypes.addressof(holder)
            else:
                if isinstance(a, (bool, np.bool_)):
                    a = np.bool_(a)
                elif isinstance(a, int):
                    a = np.int64(a)
                elif isinstance(a, float):
                    a = np.float64(a)
                if not isinstance(a, np.generic):
                    raise self._error(p, f"expected a {dt} scalar, got {type(a).__name__}")
                if a.dtype != dt:
                    raise self._error(p, f"expected a {dt} scalar, got {a.dtype}")
                value = np.array(a, dtype=dt).reshape(1)
                keep.append(value)
                argv[p.index] = value.ctypes.data
        err = ctypes.create_string_buffer(2048)
        rc = self._launch((ctypes.c_uint * 3)(*g), (ctypes.c_uint * 3)(*b), argv, err,
                          len(err))
        if rc != 0:
            raise BackendError("CUDA emulation: " + err.value.decode(errors="replace"))
