"""Backends: the interface ``graphc.compile`` uses, and finding a backend by name (the
built-in ones, and third-party ones registered under the entry-point group
``graphc.backends``).

A backend is a class (its methods static or class methods) of one of two kinds:

* a **program backend** (``takes = "program"``; numba, cupy) compiles what lowering makes:
  ``compile_program(program, **options) -> Executable`` and, optionally, a batch
  ``compile_programs(programs, **options) -> [Executable]``. ``graphc.compile`` runs the
  pass pipeline with the passes lowering requires added (``LOWERING_REQUIRES``, plus the
  backend's own ``requires``), lowers the graph once (``graphc.lower.program.lower``) and
  hands it the Program; the backend never runs passes itself.
* a **graph backend** (``takes = "graph"``; reference) runs a Graph at whatever level it
  was optimised to: ``compile(graph, **options) -> Executable`` and, optionally,
  ``compile_many(graphs, **options)``; ``requires`` may name passes it needs.

Subclassing :class:`ProgramBackend` / :class:`GraphBackend` is optional: a class with just
``compile(graph, **options)`` (the interface of third-party backends before programs) is
a graph backend, one with ``compile_program`` a program backend. Unknown options should
raise ``BackendError``.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from ..errors import BackendError

# What lowering (graphc.lower.program.lower) needs of a graph, in order: every computing
# node in a fused group, the groups in their run order, a memory plan for that order.
LOWERING_REQUIRES = ("fuse", "schedule", "plan_memory")


class Backend:
    """Common to both kinds: ``name`` (what ``graphc.compile(backend=...)`` says),
    ``takes`` ("program" or "graph") and ``requires`` (pass names the backend needs run
    before it; a program backend gets ``LOWERING_REQUIRES`` after them)."""
    name: str = ""
    takes: str = "graph"
    requires: tuple[str, ...] = ()


class GraphBackend(Backend):
    """A backend that runs a Graph (the reference interpreter)."""
    takes = "graph"

    @classmethod
    def compile(cls, graph, **options):
        raise NotImplementedError

    @classmethod
    def compile_many(cls, graphs, **options) -> list:
        return [cls.compile(g, **options) for g in graphs]


class ProgramBackend(Backend):
    """A backend that compiles a lowered Program (numba, cupy)."""
    takes = "program"

    @classmethod
    def compile_program(cls, program, **options):
        raise NotImplementedError

    @classmethod
    def compile_programs(cls, programs, **options) -> list:
        return [cls.compile_program(p, **options) for p in programs]

    @classmethod
    def compile(cls, graph, level="O0", instruments=(), **options):
        """Convenience for code that holds the class: ``graphc.compile(graph, cls,
        level)``, which runs the passes lowering requires (none again if ``graph`` is
        already fused, scheduled and planned) and lowers it."""
        from ..api import compile as compile_graph
        return compile_graph(graph, backend=cls, level=level, instruments=instruments,
                             **options)


def backend_takes(cls) -> str:
    """"program" or "graph": what ``cls`` compiles."""
    takes = getattr(cls, "takes", None)
    if takes is None:
        takes = "program" if hasattr(cls, "compile_program") else "graph"
    if takes not in ("program", "graph"):
        raise BackendError(f"backend {_label(cls)}: takes must be 'program' or 'graph', "
                           f"not {takes!r}")
    method = "compile_program" if takes == "program" else "compile"
    if not callable(getattr(cls, method, None)):
        raise BackendError(f"backend {_label(cls)} takes a {takes} but has no {method}()")
    return takes


def backend_requires(cls) -> tuple[str, ...]:
    """The passes a pipeline for ``cls`` must end with having run, in order."""
    own = getattr(cls, "requires", ())
    own = (own,) if isinstance(own, str) else tuple(own)
    return own + LOWERING_REQUIRES if backend_takes(cls) == "program" else own


def _label(cls) -> str:
    return repr(getattr(cls, "name", "") or getattr(cls, "__name__", str(cls)))


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


def get_backend(name):
    """The backend class for ``name`` (a backend class is returned as it is)."""
    if not isinstance(name, str):
        return name
    key = ALIASES.get(name, name)
    if key in BUILTIN:
        return _load(BUILTIN[key])
    for ep in entry_points(group="graphc.backends"):
        if ep.name == key:
            return ep.load()
    raise BackendError(f"unknown backend {name!r}; available: "
                       f"{', '.join(available_backends())}")
