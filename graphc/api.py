"""``graphc.compile``: graph + backend name -> Executable."""
from __future__ import annotations

from .errors import TraceError
from .ir.graph import Graph
from .ir.node import capture_loc
from .runtime.backends import get_backend


def compile(graph: Graph, backend: str = "reference", **options):
    """Compile ``graph`` for ``backend`` ("reference" today; more to come) and return an
    Executable: ``exe(*arrays)`` takes and returns NumPy arrays."""
    if not isinstance(graph, Graph):
        raise TraceError(f"compile() expects a graphc.Graph (from graphc.trace), got "
                         f"{type(graph).__name__}", loc=capture_loc())
    return get_backend(backend).compile(graph, **options)
