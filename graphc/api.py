"""``graphc.compile``: graph + backend name -> Executable, through one pipeline:

    passes (the level's, plus what the backend requires) -> lower once (program
    backends) -> backend.compile_program(program) | backend.compile(graph)
"""
from __future__ import annotations

from .errors import TraceError
from .ir.graph import Graph
from .ir.node import capture_loc
from .runtime.backends import backend_requires, backend_takes, get_backend

DEFAULT_LEVEL = "O2"


def compile(graph: Graph, backend="reference", level: str | list | None = None,
            instruments=(), **options):
    """Optimise ``graph`` and compile it for ``backend``; return an Executable:
    ``exe(*arrays)`` takes and returns NumPy arrays.

    ``level`` is the pass pipeline ("O0", "O1", "O2" or a list of pass names). It defaults
    to "O2", except for the float64 oracle (``backend="reference", float64=True``), which
    runs the graph as traced (O0) so that it never depends on the passes it checks. A
    compiled backend (numba, cupy) also gets the passes lowering requires (fuse, schedule,
    plan_memory) where the pipeline lacks them. ``backend`` is a name or a backend class
    (graphc.runtime.backends).
    """
    if not isinstance(graph, Graph):
        raise TraceError(f"compile() expects a graphc.Graph (from graphc.trace), got "
                         f"{type(graph).__name__}", loc=capture_loc())
    return _compile([graph], backend, level, instruments, options, batch=False)[0]


def compile_many(graphs, backend="reference", level: str | list | None = None,
                 instruments=(), **options) -> list:
    """``[graphc.compile(g, backend, ...) for g in graphs]``, except that a backend
    with a batch hook (numba's ``compile_programs``) compiles the kernels of all the
    graphs in one batch, in parallel (a model's forward, prefill and decode graphs: one
    wait, not three)."""
    graphs = list(graphs)
    for g in graphs:
        if not isinstance(g, Graph):
            raise TraceError(f"compile_many() expects graphc.Graphs (from graphc.trace), got "
                             f"{type(g).__name__}", loc=capture_loc())
    return _compile(graphs, backend, level, instruments, options, batch=True)


def _compile(graphs, backend, level, instruments, options, batch):
    cls = get_backend(backend)
    takes = backend_takes(cls)
    optimized = [_optimized(g, level, instruments, options, cls) for g in graphs]
    if takes == "program":
        from .lower.program import lower
        programs = [lower(g) for g in optimized]
        many = getattr(cls, "compile_programs", None) if batch else None
        if many is not None:
            return list(many(programs, **options))
        return [cls.compile_program(p, **options) for p in programs]
    many = getattr(cls, "compile_many", None) if batch else None
    if many is not None:
        return list(many(optimized, **options))
    return [cls.compile(g, **options) for g in optimized]


def _optimized(graph, level, instruments, options, backend_cls):
    """``graph`` through the pipeline for ``level`` and the backend's requirements (the
    graph itself when nothing is to run)."""
    if level is None:
        level = "O0" if options.get("float64") else DEFAULT_LEVEL
    from .passes import PassManager
    pm = PassManager(level, list(instruments), requires=backend_requires(backend_cls),
                     required_by=f"the {getattr(backend_cls, 'name', '') or 'backend'} "
                                 "backend's lowering"
                     if backend_takes(backend_cls) == "program" else "the backend")
    if not pm.steps(graph):
        return graph
    return pm.run(graph)
