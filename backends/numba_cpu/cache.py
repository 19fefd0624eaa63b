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
import importlib.util
import os
import sys
import warnings
from pathlib import Path

import numba

import graphc

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


def load_module(source: str):
    """Import the module for ``source`` from the cache (writing it if needed): for
    sources with several functions. Returns (module, was_cached)."""
    h = digest(source)
    path = cache_dir() / f"k_{h[:32]}.py"
    text = HEADER + h + "\n" + source
    cached = False
    if path.exists():
        current = path.read_text()
        first, _, rest = current.partition("\n")
        if first == HEADER + h and digest(rest) == h:
            cached = True
        else:
            warnings.warn(f"graphc: cached kernel {path} does not match its hash "
                          "(corrupt or modified); recompiling it", RuntimeWarning)
            _drop_numba_cache(path)
            _write(path, text)
    else:
        _write(path, text)
    name = f"graphc_kernels.{path.stem}"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[name]
            raise
    return mod, cached


def _drop_numba_cache(path: Path) -> None:
    pyc = path.parent / "__pycache__"
    if pyc.is_dir():
        for f in pyc.glob(f"{path.stem}.*"):
            try:
                f.unlink()
            except OSError:
                pass
