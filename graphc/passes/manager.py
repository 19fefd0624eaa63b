"""Pass registry, pipelines and the PassManager.

A pass is a function ``Graph -> Graph`` registered by name. It may edit the graph it is
given and return it (the manager hands the pipeline a private copy of the user's graph).

A pass can declare what it needs, as TVM's ``PassInfo(required=...)``:

* ``requires``: passes whose result it needs; the manager adds any that have not run (or
  whose result a later pass may have undone) right before it, recursively;
* ``preserves``: the earlier results it keeps (pass names, or ``"*"`` for a pass that only
  records an analysis); any pass not listed is assumed undone by it;
* ``holds(graph)``: whether a graph already has this pass's result (a graph optimised
  earlier, handed to ``compile`` at ``level="O0"``), so that it need not run again.

A pipeline can also be given requirements of its own (``PassManager(..., requires=)``):
what its consumer needs, e.g. lowering for a compiled backend, which needs ``fuse`` and
``plan_memory`` (``graphc.runtime.backends.LOWERING_REQUIRES``).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ..ir.node import capture_loc
from ..errors import GraphcError, RegistrationError
from ..ir.graph import Graph

ALL = "*"


@dataclass
class PassInfo:
    """A registered pass: its function and what it declares."""
    name: str
    fn: Callable[[Graph], Graph]
    requires: tuple[str, ...] = ()
    preserves: tuple[str, ...] = ()
    holds: Callable[[Graph], bool] | None = None

    def keeps(self, other: str) -> bool:
        """Does running this pass leave ``other``'s result intact?"""
        return other == self.name or ALL in self.preserves or other in self.preserves


_PASSES: dict[str, PassInfo] = {}

PIPELINES: dict[str, list[str]] = {
    "O0": [],
    "O1": ["simplify", "fold", "cse", "dce"],
    "O2": ["simplify", "fold", "cse", "dce", "fuse_patterns", "simplify", "cse", "dce",
           "decompose", "fuse", "schedule", "plan_memory"],
}


class PassError(GraphcError):
    """A pass name that is not registered, or a pass that broke the graph."""


def _names(value) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def register_pass(name: str, *, requires: Iterable[str] | str = (),
                  preserves: Iterable[str] | str = (), holds: Callable | None = None):
    """Register ``fn(graph) -> graph`` under ``name`` (usable in pipelines).

    ``requires``: passes that must have run before it (the manager adds them);
    ``preserves``: earlier results it leaves intact (``"*"``: all of them);
    ``holds(graph) -> bool``: the graph already has this pass's result."""
    def deco(fn):
        old = _PASSES.get(name)
        if old is not None and old.fn is not fn:
            raise RegistrationError(f"pass {name!r} is already registered", loc=capture_loc())
        _PASSES[name] = PassInfo(name, fn, _names(requires), _names(preserves), holds)
        fn.pass_name = name
        return fn
    return deco


def declare_pass(name: str, *, requires=None, preserves=None, holds=None) -> PassInfo:
    """Set what an already registered pass requires / preserves / how to tell it holds
    (for passes registered without them; arguments left None are kept)."""
    info = pass_info(name)
    if requires is not None:
        info.requires = _names(requires)
    if preserves is not None:
        info.preserves = _names(preserves)
    if holds is not None:
        info.holds = holds
    return info


def unregister_pass(name: str) -> None:
    _PASSES.pop(name, None)


def pass_info(name: str) -> PassInfo:
    _ensure_builtin()
    try:
        return _PASSES[name]
    except KeyError:
        raise PassError(f"unknown pass {name!r}; registered: {', '.join(sorted(_PASSES))}") \
            from None


def get_pass(name: str):
    return pass_info(name).fn


def all_passes() -> list[str]:
    _ensure_builtin()
    return sorted(_PASSES)


def _ensure_builtin():
    from . import builtin  # noqa: F401  (registers the built-in passes)


def _level(pipeline) -> list[str]:
    if isinstance(pipeline, str):
        if pipeline in PIPELINES:
            return list(PIPELINES[pipeline])
        raise PassError(f"unknown optimisation level {pipeline!r}; choose from "
                        f"{', '.join(PIPELINES)} or pass a list of pass names")
    return list(pipeline)


@dataclass(frozen=True)
class Step:
    """One pass of a resolved pipeline; ``required_by`` says who needed it when the
    manager added it (None: it was in the pipeline as given)."""
    name: str
    required_by: str | None = None


def plan_pipeline(pipeline, requires: Iterable[str] = (), graph: Graph | None = None,
                  required_by: str = "the pipeline's consumer") -> list[Step]:
    """The passes to run, in order: ``pipeline`` (a level or a list of names) with every
    missing requirement added (each pass's ``requires``, then ``requires`` of the whole
    pipeline, which ``required_by`` names in messages). A requirement is met when that
    pass ran earlier and every pass since preserves it, or, for the input ``graph``, when
    its ``holds(graph)`` says so."""
    valid: set[str] = set()
    if graph is not None:
        _ensure_builtin()
        valid = {n for n, info in _PASSES.items() if info.holds is not None
                 and info.holds(graph)}
    steps: list[Step] = []

    def run(name: str, by: str | None, stack: tuple):
        info = pass_info(name)
        for r in info.requires:
            ensure(r, name, stack + (name,))
        steps.append(Step(name, by))
        for v in list(valid):
            if not info.keeps(v):
                valid.discard(v)
        valid.add(name)

    def ensure(name: str, by: str, stack: tuple):
        if name in stack:
            raise PassError(f"passes require each other in a cycle: "
                            f"{' -> '.join(stack + (name,))}")
        if name not in valid:
            run(name, by, stack)

    for name in _level(pipeline):
        run(name, None, ())
    for name in _names(requires):
        ensure(name, required_by, ())
    return steps


def resolve_pipeline(pipeline, requires: Iterable[str] = (), graph: Graph | None = None) \
        -> list[str]:
    """The pass names :func:`plan_pipeline` gives (a level's list when nothing is
    required)."""
    return [s.name for s in plan_pipeline(pipeline, requires, graph)]


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
    instruments (``graphc.passes.instruments``). ``requires``: passes the result must
    have had run (what its consumer needs, named by ``required_by``); they and the
    passes' own requirements are added where missing. ``pipeline`` is the list that runs
    on a graph with nothing done yet; :meth:`steps` the one for a given graph."""

    def __init__(self, pipeline="O2", instruments: Sequence = (), requires: Iterable[str] = (),
                 required_by: str = "the pipeline's consumer"):
        self.level = pipeline
        self.requires = _names(requires)
        self.required_by = required_by
        self.pipeline = [s.name for s in self.steps()]
        self.instruments = list(instruments)
        self.ran: list[str] = []

    def steps(self, graph: Graph | None = None) -> list[Step]:
        return plan_pipeline(self.level, self.requires, graph, self.required_by)

    def run(self, graph: Graph) -> Graph:
        steps = self.steps(graph)
        self.ran = [s.name for s in steps]
        g = graph.copy()
        listening = any(getattr(i, "wants_log", False) for i in self.instruments)
        prev_log = getattr(_local, "log", None)
        if listening:
            _local.log = []
        try:
            for inst in self.instruments:
                inst.start(g)
            for step in steps:
                name = step.name
                fn = get_pass(name)
                for inst in self.instruments:
                    inst.before_pass(name, g)
                _local.current = name
                mark = len(_local.log) if listening else 0
                if step.required_by is not None:
                    note("required", f"{name} added to the pipeline: {step.required_by} "
                         "requires it", required_by=step.required_by)
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


def optimize(graph: Graph, level="O2", instruments: Iterable = (),
             requires: Iterable[str] = ()) -> Graph:
    """Run the pipeline for ``level`` ("O0", "O1", "O2" or a list of pass names), with
    any pass it requires added, and return the optimised graph (the input graph is not
    modified)."""
    return PassManager(level, list(instruments), requires).run(graph)
