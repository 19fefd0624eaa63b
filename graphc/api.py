"""``graphc.compile``: graph + backend name -> Executable."""
from __future__ import annotations

from .errors import TraceError
from .ir.graph import Graph
from .ir.node import capture_loc
from .runtime.backends import get_backend

DEFAULT_LEVEL = "O2"


def compile(graph: Graph, backend: str = "reference", level: str | list | None = None,
            instruments=(), **options):
    """Optimise ``graph`` and compile it for ``backend``; return an Executable:
    ``exe(*arrays)`` takes and returns NumPy arrays.

    ``level`` is the pass pipeline ("O0", "O1", "O2" or a list of pass names). It defaults
    to "O2", except for the float64 oracle (``backend="reference", float64=True``), which
    runs the graph as traced (O0) so that it never depends on the passes it checks.
    """
    if not isinstance(graph, Graph):
        raise TraceError(f"compile() expects a graphc.Graph (from graphc.trace), got "
                         f"{type(graph).__name__}", loc=capture_loc())
    backend_cls = get_backend(backend)
    return backend_cls.compile(_optimized(graph, level, instruments, options), **options)


def compile_many(graphs, backend: str = "reference", level: str | list | None = None,
                 instruments=(), **options) -> list:
    """``[graphc.compile(g, backend, ...) for g in graphs]``, except that a backend
    with its own ``compile_many`` (numba) compiles the kernels of all the graphs in one
    batch, in parallel (a model's forward, prefill and decode graphs: one wait, not
    three)."""
    graphs = list(graphs)
    for g in graphs:
        if not isinstance(g, Graph):
            raise TraceError(f"compile_many() expects graphc.Graphs (from graphc.trace), got "
                             f"{type(g).__name__}", loc=capture_loc())
    backend_cls = get_backend(backend)
    optimized = [_optimized(g, level, instruments, options) for g in graphs]
    many = getattr(backend_cls, "compile_many", None)
    if many is not None:
        return list(many(optimized, **options))
    return [backend_cls.compile(g, **options) for g in optimized]


def _optimized(graph, level, instruments, options):
    if level is None:
        level = "O0" if options.get("float64") else DEFAULT_LEVEL
    from .passes import optimize
    return optimize(graph, level, instruments) if level != "O0" else graph
