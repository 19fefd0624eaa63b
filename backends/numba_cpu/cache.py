"""Content-addressed kernel cache.

Each kernel's generated source is written to ``<cache>/k_<sha256>.py`` with its hash on the
first line and graphc's seal at the end (graphc/cache.py), executed from the bytes checked
(registered in ``sys.modules`` before it runs, so Numba's ``cache=True`` finds the file and
stores machine code beside it, sealed too: kernel_import.py), and so a second process
compiling the same model starts warm. A file that is not exactly what graphc would write
(corrupt or tampered) is rewritten and recompiled, never executed.

The directory is ``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else
``~/.cache/graphc``, with a subfolder per graphc and Numba version; one that another user
could write to is refused (graphc.cache.CacheTrustError).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numba

import graphc

from . import kernel_import
from .kernel_import import DONE, HEADER, import_file, module_name

_DIRS: dict[str, Path] = {}     # cache root -> its checked kernel folder


def cache_dir() -> Path:
    from graphc import cache as trust
    root = str(trust.cache_root())
    folder = _DIRS.get(root)
    if folder is None:
        folder = trust.cache_subdir(f"numba-{graphc.__version__}-{numba.__version__}")
        trust.private_dir(folder / "__pycache__", folder)   # Numba's files: made 0700 here
        kernel_import.register_folder(folder)
        _DIRS[root] = folder
    return folder


def digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def _write(path: Path, text: str) -> None:
    """Write ``text`` (already sealed, see _entry) atomically: a concurrent reader sees
    the old or the new file."""
    from graphc.cache import write_atomic
    write_atomic(path, text.encode())


def load_kernel(source: str):
    """Import the module for ``source`` from the cache (writing it if needed) and return
    its ``kernel`` function. Returns (function, was_cached)."""
    mod, cached = load_module(source)
    return mod.kernel, cached


def _entry(source: str):
    """(digest, cache path, file text: the hash line, the source and graphc's seal) of
    ``source``."""
    from graphc.cache import seal
    h = digest(source)
    path = cache_dir() / f"k_{h[:32]}.py"
    return h, path, seal(path.name, (HEADER + h + "\n" + source).encode()).decode()


def _read(path: Path) -> bytes | None:
    """The bytes of ``path``, read once; None if there is none. A symlink, a folder or an
    unreadable file reads as b"" (not what graphc wrote)."""
    from graphc.cache import read_bytes
    try:
        return read_bytes(path)
    except FileNotFoundError:
        return None
    except OSError:
        return b""


def _unsealed(h: str, source: str) -> bytes:
    """The file an earlier graphc wrote for ``source``, before files were sealed: it and
    its module's Numba files (never read) are replaced without a warning."""
    return (HEADER + h + "\n" + source).encode()


def _is_current(path: Path, text: str) -> bool:
    data = _read(path)
    return data is not None and data == text.encode()


def load_module(source: str):
    """Import the module for ``source`` from the cache (writing it if needed): for
    sources with several functions. Returns (module, was_cached)."""
    h, path, text = _entry(source)
    code = text.encode()
    data = _read(path)
    cached = data == code        # the file is exactly what graphc writes for source
    if not cached:
        if data is not None:
            if data != _unsealed(h, source):    # (that: an earlier graphc's, replaced quietly)
                warnings.warn(f"graphc: cached kernel {path} does not match its hash "
                              "(corrupt or modified); deleted it, rebuilding it",
                              RuntimeWarning)
            _drop_numba_cache(path)
            from graphc.cache import remove
            if path.is_dir() and not path.is_symlink():
                remove(path)
        _write(path, text)
    name = module_name(path)
    mod = sys.modules.get(name)
    if mod is None:
        mod = import_file(name, path, code)     # the bytes checked, not the file again
    return mod, cached


# ---------------------------------------------------------------------------------------
# Compiling in parallel. Numba compiles one function at a time on one core, and a model's
# first compile is dozens of modules (DeepSeek-V2 mini's forward: 42). Modules not in the
# cache yet are written there and imported by worker processes, which leave their machine
# code in Numba's disk cache beside each file; the backend's own loads then read it from
# there. Workers are plain processes running kernel_import.py, not multiprocessing: that
# re-imports the user's __main__, which breaks scripts without a main guard. Anything that goes
# wrong with a worker (it cannot start, dies, fails a module) only means the module is
# compiled by the load in this process, which raises its error if it has one.

# Fewer modules than this to compile: not worth starting processes (~0.5 s each).
PARALLEL_MIN_MODULES = 3

def compile_jobs() -> int:
    """Worker processes for :func:`precompile`: ``$GRAPHC_COMPILE_JOBS`` (1: compile in
    this process), else the cores this process may use, at most 8."""
    env = os.environ.get("GRAPHC_COMPILE_JOBS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            from graphc.errors import BackendError
            raise BackendError(f"GRAPHC_COMPILE_JOBS must be an integer, got {env!r}")
    from .threads import usable_cores
    return min(8, usable_cores())


# What one ``parallel=True`` function adds to a module's Numba compile, in characters of
# plain kernel source: Numba's parfor passes take ~0.7 s a function here, a generated
# kernel of ~4,000 characters ~0.15-0.25 s (DeepSeek-V2 mini's modules, one by one).
PARALLEL_COST = 20_000


def compile_cost(text: str) -> int:
    """A module's expected compile time, in characters of plain kernel source: its
    length, and PARALLEL_COST for each ``parallel=True`` function (a template's
    ``prange`` loops: the MoE decode module, 8 KB, 2.8 s; the one-row GEMMs, 2 KB,
    2.1 s; a 4 KB generated kernel 0.2 s). Only the order matters (precompile)."""
    return len(text) + PARALLEL_COST * text.count("parallel=True")


def _indexed(folder: Path) -> set[str]:
    """Stems of the modules in ``folder`` whose Numba index is in its ``__pycache__``
    (a module file alone may be left by an interrupted compile); one listing."""
    try:
        names = os.listdir(folder / "__pycache__")
    except OSError:
        return set()
    return {n.split(".", 1)[0] for n in names if n.endswith(".nbi")}


def precompile(sources, done=None) -> set[str]:
    """Compile the modules of ``sources`` that are not in the cache yet, in parallel
    worker processes (see above); ``done()`` is called as each finishes. Returns the
    digests of the modules the workers were given."""
    todo, indexed = {}, None
    for src in sources:
        h, path, text = _entry(src)
        if h in todo:
            continue
        if indexed is None:
            indexed = _indexed(path.parent)
        data = _read(path)
        if data is not None and data == _unsealed(h, src):
            _drop_numba_cache(path)       # an earlier graphc's module: compile it again
            indexed.discard(path.stem)
            data = None
        if data is None or (path.stem not in indexed and data == text.encode()):
            todo[h] = (path, text)        # (a file that does not match: load_module warns)
    jobs = min(compile_jobs(), len(todo))
    if (jobs < 2 or len(todo) < PARALLEL_MIN_MODULES or not sys.executable
            or getattr(sys, "frozen", False)):        # a frozen app: no interpreter to run
        return set()
    # Each worker takes the next module when it finishes one, the costliest first
    # (compile_cost), so no long compile starts last while the other workers idle.
    queue = []
    for path, text in sorted(todo.values(), key=lambda pt: -compile_cost(pt[1])):
        _write(path, text)
        queue.append(path)
    lock = threading.Lock()

    def feed(proc) -> bool:
        with lock:
            path = queue.pop(0) if queue else None
        if path is None:
            proc.stdin.close()
            return False
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
        return True

    def serve(proc):
        try:
            more = feed(proc)
            for line in proc.stdout:
                if not line.startswith(DONE):
                    continue
                if done is not None:
                    with lock:
                        done()
                if more:
                    more = feed(proc)
        except Exception:                # the worker died, or done() failed: what is
            pass                         # left compiles here
        finally:
            try:
                proc.stdin.close()       # a worker waiting for more work ends
            except OSError:
                pass

    from graphc import cache as trust
    trust.cache_key()                    # made here, once, before the workers read it
    trust_file = trust.__file__
    procs = []
    try:
        try:
            for _ in range(jobs):
                procs.append(subprocess.Popen(
                    [sys.executable, kernel_import.__file__, trust_file],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, text=True))   # stderr: Numba's warnings
        except OSError:
            return set()                 # cannot start processes here: compile here
        servers = [threading.Thread(target=serve, args=(p,), daemon=True) for p in procs]
        for t in servers:
            t.start()
        for t in servers:
            while t.is_alive():
                t.join(0.2)              # (a plain join cannot be interrupted on Windows)
        for p in procs:
            p.wait()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout):
                try:
                    f.close()
                except OSError:
                    pass
    return set(todo)


def _drop_numba_cache(path: Path) -> None:
    pyc = path.parent / "__pycache__"
    if pyc.is_dir():
        for f in pyc.glob(f"{path.stem}.*"):
            try:
                f.unlink()
            except OSError:
                pass
