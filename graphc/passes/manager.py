"""Pass registry, pipelines and the PassManager.

A pass is a function ``Graph -> Graph`` registered by name. It may edit the graph it is
given and return it (the manager hands the pipeline a private copy of the user's graph).
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable, Sequence

from ..ir.node import capture_loc
from ..errors import GraphcError, RegistrationError
from ..ir.graph import Graph

_PASSES: dict[str, Callable[[Graph], Graph]] = {}

PIPELINES: dict[str, list[str]] = {
    "O0": [],
    "O1": ["simplify", "fold", "cse", "dce"],
    "O2": ["simplify", "fold", "cse", "dce", "fuse_patterns", "simplify", "cse", "dce",
           "decompose", "fuse", "schedule", "plan_memory"],
}


class PassError(GraphcError):
    """A pass name that is not registered, or a pass that broke the graph."""


def register_pass(name: str):
    """Register ``fn(graph) -> graph`` under ``name`` (usable in pipelines)."""
    def deco(fn):
        if name in _PASSES and _PASSES[name] is not fn:
            raise RegistrationError(f"pass {name!r} is already registered", loc=capture_loc())
        _PASSES[name] = fn
        fn.pass_name = name
        return fn
    return deco


def unregister_pass(name: str) -> None:
    _PASSES.pop(name, None)


def get_pass(name: str):
    _ensure_builtin()
    try:
        return _PASSES[name]
    except KeyError:
        raise PassError(f"unknown pass {name!r}; registered: {', '.join(sorted(_PASSES))}") \
            from None


def all_passes() -> list[str]:
    _ensure_builtin()
    return sorted(_PASSES)


def _ensure_builtin():
    from . import builtin  # noqa: F401  (registers the built-in passes)


def resolve_pipeline(pipeline) -> list[str]:
    if isinstance(pipeline, str):
        if pipeline in PIPELINES:
            return list(PIPELINES[pipeline])
        raise PassError(f"unknown optimisation level {pipeline!r}; choose from "
                        f"{', '.join(PIPELINES)} or pass a list of pass names")
    return list(pipeline)


# -- the explain log: passes note what they did and what they declined -------------------
_local = threading.local()


def note(kind: str, message: str, **data) -> None:
    """Record an explain event (a rule fired / did not fire, a group formed, ...).
    Cheap no-op unless an :class:`Explain` instrument is listening."""
    log = getattr(_local, "log", None)
    if log is not None:
        log.append({"pass": getattr(_local, "current", None), "kind": kind,
                    "message": message, **data})


def explaining() -> bool:
    return getattr(_local, "log", None) is not None


class PassManager:
    """Run a pipeline (a level name such as ``"O2"`` or a list of pass names) with
    instruments (``graphc.passes.instruments``)."""

    def __init__(self, pipeline="O2", instruments: Sequence = ()):
        self.pipeline = resolve_pipeline(pipeline)
        for name in self.pipeline:
            get_pass(name)
        self.instruments = list(instruments)

    def run(self, graph: Graph) -> Graph:
        g = graph.copy()
        listening = any(getattr(i, "wants_log", False) for i in self.instruments)
        prev_log = getattr(_local, "log", None)
        if listening:
            _local.log = []
        try:
            for inst in self.instruments:
                inst.start(g)
            for name in self.pipeline:
                fn = get_pass(name)
                for inst in self.instruments:
                    inst.before_pass(name, g)
                _local.current = name
                mark = len(_local.log) if listening else 0
                out = fn(g)
                if not isinstance(out, Graph):
                    raise PassError(f"pass {name!r} returned {type(out).__name__}, "
                                    "not a Graph")
                g = out
                events = _local.log[mark:] if listening else []
                for inst in self.instruments:
                    inst.after_pass(name, g, events)
            for inst in self.instruments:
                inst.finish(g)
        finally:
            _local.current = None
            _local.log = prev_log
        return g


def optimize(graph: Graph, level="O2", instruments: Iterable = ()) -> Graph:
    """Run the pipeline for ``level`` ("O0", "O1", "O2" or a list of pass names) and
    return the optimised graph (the input graph is not modified)."""
    return PassManager(level, list(instruments)).run(graph)
