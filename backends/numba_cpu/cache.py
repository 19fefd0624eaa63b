"""Content-addressed kernel cache.

Each kernel's generated source is written to ``<cache>/k_<sha256>.py`` with its hash on the
first line, imported from there (registered in ``sys.modules`` before it runs, so Numba's
``cache=True`` finds the file and stores machine code beside it), and so a second process
compiling the same model starts warm. A file whose content does not match its hash (corrupt
or tampered) is rewritten and recompiled, never executed.

The directory is ``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else
``~/.cache/graphc``, with a subfolder per graphc and Numba version.
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
from .kernel_import import DONE, import_file, module_name

HEADER = "# graphc-sha256: "


def cache_dir() -> Path:
    from graphc.cache import cache_subdir
    return cache_subdir(f"numba-{graphc.__version__}-{numba.__version__}")


def digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file


def load_kernel(source: str):
    """Import the module for ``source`` from the cache (writing it if needed) and return
    its ``kernel`` function. Returns (function, was_cached)."""
    mod, cached = load_module(source)
    return mod.kernel, cached


def _entry(source: str):
    """(digest, cache path, file text) of ``source``."""
    h = digest(source)
    return h, cache_dir() / f"k_{h[:32]}.py", HEADER + h + "\n" + source


def _is_current(path: Path, h: str) -> bool:
    first, _, rest = path.read_text().partition("\n")
    return first == HEADER + h and digest(rest) == h


def load_module(source: str):
    """Import the module for ``source`` from the cache (writing it if needed): for
    sources with several functions. Returns (module, was_cached)."""
    h, path, text = _entry(source)
    cached = False
    if path.exists():
        if _is_current(path, h):
            cached = True
        else:
            warnings.warn(f"graphc: cached kernel {path} does not match its hash "
                          "(corrupt or modified); recompiling it", RuntimeWarning)
            _drop_numba_cache(path)
            _write(path, text)
    else:
        _write(path, text)
    name = module_name(path)
    mod = sys.modules.get(name)
    if mod is None:
        mod = import_file(name, path)
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
        if not path.exists() or (path.stem not in indexed and _is_current(path, h)):
            todo[h] = (path, text)        # (a file that does not match: load_module warns)
    jobs = min(compile_jobs(), len(todo))
    if (jobs < 2 or len(todo) < PARALLEL_MIN_MODULES or not sys.executable
            or getattr(sys, "frozen", False)):        # a frozen app: no interpreter to run
        return set()
    # Each worker takes the next module when it finishes one, longest source first
    # (about the longest compile).
    queue = []
    for path, text in sorted(todo.values(), key=lambda pt: -len(pt[1])):
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

    procs = []
    try:
        try:
            for _ in range(jobs):
                procs.append(subprocess.Popen(
                    [sys.executable, kernel_import.__file__], stdin=subprocess.PIPE,
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
