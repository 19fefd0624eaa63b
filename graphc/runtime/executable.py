"""The Executable every backend returns: NumPy arrays in, NumPy arrays out."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..ir.node import capture_loc
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

    def run(self, arrays: Sequence[np.ndarray], bindings: dict[str, int]) -> list[np.ndarray]:
        raise NotImplementedError

    def __call__(self, *arrays):
        loc = capture_loc()
        bindings = bind_inputs(self.graph, arrays, loc=loc, array_types=self.array_types)
        outs = self.run(arrays, bindings)
        if len(outs) == 1 and self.graph.meta.get("single_output", True):
            return outs[0]
        return tuple(outs)

    def __repr__(self) -> str:
        return f"<graphc {self.backend} executable for {self.graph.name}>"
