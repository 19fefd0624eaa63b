"""The reference backend: runs a Graph with the ops' NumPy implementations.

``graphc.compile(graph, backend="reference", float64=True)`` is the oracle mode: every
float tensor is computed in float64 (outputs come back as float64).
"""
from __future__ import annotations

from graphc.runtime.backends import GraphBackend
from graphc.runtime.executable import Executable
from graphc.runtime.interpreter import run_graph


class ReferenceExecutable(Executable):
    backend = "reference"

    def __init__(self, graph, float64: bool = False):
        super().__init__(graph)
        self.float64 = float64

    # Every call checks its sizes as the compiled backends do (a few expressions: the
    # interpreter's own work dwarfs them), so the reference raises what they raise.
    def run(self, arrays, bindings):
        self.check_sizes(bindings)
        return run_graph(self.graph, arrays, bindings, float64=self.float64)

    def run_timed_steps(self, arrays, bindings, timer):
        self.check_sizes(bindings)
        return run_graph(self.graph, arrays, bindings, float64=self.float64, timer=timer)

    def profile_entries(self, bindings):
        g = self.graph
        return [(nid, g.nodes[nid], "op", g.nodes[nid].type.concrete_shape(bindings))
                for nid in g.topo_order() if g.nodes[nid].op not in ("input", "constant")]


class ReferenceBackend(GraphBackend):
    """A graph backend: it interprets the graph at whatever level it was optimised to."""
    name = "reference"

    @staticmethod
    def compile(graph, float64: bool = False, **options):
        if options:
            from graphc.errors import BackendError
            raise BackendError(f"reference backend: unknown options {sorted(options)}")
        return ReferenceExecutable(graph, float64=float64)
