"""The reference backend: runs a Graph with the ops' NumPy implementations.

``graphc.compile(graph, backend="reference", float64=True)`` is the oracle mode: every
float tensor is computed in float64 (outputs come back as float64).
"""
from __future__ import annotations

from graphc.runtime.checks import size_checks
from graphc.runtime.executable import Executable
from graphc.runtime.interpreter import run_graph


class ReferenceExecutable(Executable):
    backend = "reference"

    def __init__(self, graph, float64: bool = False):
        super().__init__(graph)
        self.float64 = float64
        self._size_checks = size_checks(graph)
        self._sizes_checked: set = set()

    def _check_sizes(self, bindings) -> None:
        """The symbol-size checks every backend makes (graphc/runtime/checks.py), once
        per set of sizes, so the reference raises what the compiled backends raise."""
        key = tuple(sorted(bindings.items()))
        if key not in self._sizes_checked:
            for check in self._size_checks:
                check(bindings)
            if len(self._sizes_checked) > 64:
                self._sizes_checked.clear()
            self._sizes_checked.add(key)

    def run(self, arrays, bindings):
        self._check_sizes(bindings)
        return run_graph(self.graph, arrays, bindings, float64=self.float64)

    def run_timed_steps(self, arrays, bindings, timer):
        self._check_sizes(bindings)
        return run_graph(self.graph, arrays, bindings, float64=self.float64, timer=timer)

    def profile_entries(self, bindings):
        g = self.graph
        return [(nid, g.nodes[nid], "op", g.nodes[nid].type.concrete_shape(bindings))
                for nid in g.topo_order() if g.nodes[nid].op not in ("input", "constant")]


class ReferenceBackend:
    name = "reference"

    @staticmethod
    def compile(graph, float64: bool = False, **options):
        if options:
            from graphc.errors import BackendError
            raise BackendError(f"reference backend: unknown options {sorted(options)}")
        return ReferenceExecutable(graph, float64=float64)
