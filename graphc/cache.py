"""Where graphc keeps compiled kernels: ``$GRAPHC_CACHE_DIR``, else
``$XDG_CACHE_HOME/graphc``, else ``~/.cache/graphc``; each backend uses a subfolder named
for itself and the versions its files depend on."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("GRAPHC_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                ".cache")
        base = os.path.join(xdg, "graphc")
    return Path(base)


def cache_subdir(name: str) -> Path:
    """``cache_root() / name``, created if needed."""
    path = cache_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
