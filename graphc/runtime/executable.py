"""The Executable every backend returns: NumPy arrays in, NumPy arrays out."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import BackendError
from ..ir.node import capture_loc
from .checks import size_checks
from .signature import bind_inputs


class Executable:
    """A compiled graph. Subclasses implement :meth:`run` on checked inputs.

    ``exe(*arrays)`` checks the arrays against the graph's input specs (dtype, rank, fixed
    dims, one size per symbol) and returns one array, or a tuple for several outputs.
    """

    backend = "base"
    array_types = (np.ndarray,)     # what a call takes (a GPU backend adds device arrays)

    def __init__(self, graph):
        self.graph = graph
        self._size_checks = size_checks(graph)

    def check_sizes(self, bindings) -> None:
        """The checks of a call's symbol sizes every backend makes (checks.py): an
        InputError naming the op, its shapes and the user's line."""
        for check in self._size_checks:
            check(bindings)

    def run(self, arrays: Sequence[np.ndarray], bindings: dict[str, int]) -> list[np.ndarray]:
        raise NotImplementedError

    def __call__(self, *arrays):
        loc = capture_loc()
        bindings = bind_inputs(self.graph, arrays, loc=loc, array_types=self.array_types)
        outs = self.run(arrays, bindings)
        if len(outs) == 1 and self.graph.meta.get("single_output", True):
            return outs[0]
        return tuple(outs)

    # -- profiling (graphc.runtime.profile) -----------------------------------------------
    def profile(self, *arrays, repeat: int = 5):
        """Where a call on these arrays spends its time: a :class:`~graphc.runtime.profile.
        Profile` of the median time of every step (``print(exe.profile(x))`` for a table).
        One warm-up call, ``repeat`` whole calls, then ``repeat`` calls with a clock around
        every step."""
        import time
        from .profile import StepTimer, build_profile
        loc = capture_loc()
        bindings = bind_inputs(self.graph, arrays, loc=loc, array_types=self.array_types)
        repeat = max(1, int(repeat))
        entries = self.profile_entries(bindings)       # (a backend without steps: now)
        self.run(arrays, bindings)
        self.synchronize()
        totals = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            self.run(arrays, bindings)
            self.synchronize()
            totals.append(time.perf_counter() - t0)
        timer = StepTimer(self.synchronize if self.needs_sync else None)
        outside = []
        for _ in range(repeat):
            inside, t0 = timer.elapsed, time.perf_counter()
            self.run_timed_steps(arrays, bindings, timer)
            self.synchronize()
            outside.append(time.perf_counter() - t0 - (timer.elapsed - inside))
        sizes = ", ".join(f"{k}={v}" for k, v in sorted(bindings.items()))
        label = f"{self.graph.name} on {self.backend}" + (f" ({sizes})" if sizes else "")
        return build_profile(label, entries, timer, totals, repeat, outside)

    needs_sync = False              # a device backend: steps are asynchronous

    def synchronize(self) -> None:
        """Wait for the work this executable queued (a no-op on the CPU)."""

    def run_timed_steps(self, arrays, bindings, timer) -> list:
        """:meth:`run` with ``timer.start()`` / ``timer.stop(key, t0)`` around each step."""
        raise BackendError(f"the {self.backend} backend cannot profile its steps")

    def profile_entries(self, bindings) -> list:
        """(timer key, node, kind, output shape) of every step, in run order."""
        raise BackendError(f"the {self.backend} backend cannot profile its steps")

    def __repr__(self) -> str:
        return f"<graphc {self.backend} executable for {self.graph.name}>"
