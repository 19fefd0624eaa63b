"""Finding backends by name: the built-in ones, and third-party ones registered under the
entry-point group ``graphc.backends`` (value: a class with ``compile(graph, **options)``)."""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from ..errors import BackendError

# name -> "module:attr"; aliases map a user-facing name to the same class.
BUILTIN = {
    "reference": "graphc.backends.reference:ReferenceBackend",
    "numba": "graphc.backends.numba_cpu:NumbaBackend",
    "cupy": "graphc.backends.cupy_gpu:CupyBackend",
    # the cupy backend's CUDA C run on the CPU by the emulation harness (no GPU needed)
    "cupy-emu": "graphc.backends.cupy_gpu:CupyEmulatedBackend",
}
ALIASES = {"numpy": "reference"}


def _load(target: str):
    mod, _, attr = target.partition(":")
    return getattr(importlib.import_module(mod), attr)


def available_backends() -> list[str]:
    names = set(BUILTIN)
    names |= {ep.name for ep in entry_points(group="graphc.backends")}
    return sorted(names)


def get_backend(name: str):
    """The backend class for ``name``."""
    key = ALIASES.get(name, name)
    if key in BUILTIN:
        return _load(BUILTIN[key])
    for ep in entry_points(group="graphc.backends"):
        if ep.name == key:
            return ep.load()
    raise BackendError(f"unknown backend {name!r}; available: "
                       f"{', '.join(available_backends())}")
