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
    if level is None:
        level = "O0" if options.get("float64") else DEFAULT_LEVEL
    from .passes import optimize
    optimized = optimize(graph, level, instruments) if level != "O0" else graph
    return backend_cls.compile(optimized, **options)
