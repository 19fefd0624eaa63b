"""The reference backend: runs a Graph with the ops' NumPy implementations.

``graphc.compile(graph, backend="reference", float64=True)`` is the oracle mode: every
float tensor is computed in float64 (outputs come back as float64).
"""
from __future__ import annotations

from graphc.runtime.backends import GraphBackend
from graphc.runtime.executable import Executable
from graphc.runtime.interpreter import run_graph
from graphc.runtime.memory import available_bytes, check_fits, interpreter_peak


class ReferenceExecutable(Executable):
    backend = "reference"

    def __init__(self, graph, float64: bool = False):
        super().__init__(graph)
        self.float64 = float64
        self._peaks = {}                # sizes -> the interpreter's estimated peak

    def memory_need(self, bindings):
        """(estimated peak bytes of a call, the node that reaches it, its bytes):
        graphc.runtime.memory.interpreter_peak, kept per set of sizes."""
        key = tuple(sorted(bindings.items()))
        if key not in self._peaks:
            if len(self._peaks) > 64:
                self._peaks.clear()
            self._peaks[key] = interpreter_peak(self.graph, bindings, self.float64)
        return self._peaks[key]

    def check_memory(self, bindings):
        avail = available_bytes()
        if avail is None:
            return
        need, node, node_bytes = self.memory_need(bindings)
        what = f"{self.graph.name} on the reference interpreter" + (
            " in float64" if self.float64 else "")
        check_fits(need, node, node_bytes, bindings, what, available=avail,
                   role="the peak is at")

    # Every call checks its sizes as the compiled backends do (a few expressions: the
    # interpreter's own work dwarfs them), so the reference raises what they raise; and
    # whether it fits in memory (an InputError before any work, not NumPy's MemoryError).
    def run(self, arrays, bindings):
        self.check_sizes(bindings)
        self.check_memory(bindings)
        return run_graph(self.graph, arrays, bindings, float64=self.float64)

    def run_timed_steps(self, arrays, bindings, timer):
        self.check_sizes(bindings)
        self.check_memory(bindings)
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
