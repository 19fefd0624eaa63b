"""Random inputs that fit a graph: for the numeric-check instrument, the CLI and tests."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..ir.dims import evaluate


def index_bounds(graph) -> dict[int, int]:
    """For each integer input, the number of rows of the smallest table it indexes
    (so random ids are in range); inputs that index nothing get 2."""
    bounds = {}
    for i in graph.inputs:
        if not graph.nodes[i].type.dtype.startswith("int"):
            continue
        rows = []
        for u in graph.users(i):
            n = graph.nodes[u]
            if n.op == "embedding" and n.inputs[1] == i:
                d = graph.nodes[n.inputs[0]].type.shape[0]
                if isinstance(d, int):
                    rows.append(d)
        bounds[i] = min(rows) if rows else 2
    return bounds


def random_inputs(graph, rng: np.random.Generator, sizes: Mapping[str, int] | None = None,
                  default_size: int = 7) -> tuple[list[np.ndarray], dict[str, int]]:
    """Random arrays for ``graph``'s inputs (normal floats, in-range ids, random bools) and
    the symbol bindings used (``sizes`` first, ``default_size`` for the rest)."""
    bindings = dict(sizes or {})
    for t in graph.input_types:
        for s in t.symbols:
            bindings.setdefault(s, default_size)
    bounds = index_bounds(graph)
    arrays = []
    for i in graph.inputs:
        t = graph.nodes[i].type
        shape = tuple(evaluate(d, bindings) for d in t.shape)
        if t.dtype.startswith("int"):
            arrays.append(rng.integers(0, bounds[i], size=shape).astype(t.dtype))
        elif t.dtype == "bool":
            arrays.append(rng.random(shape) < 0.5)
        else:
            arrays.append(rng.standard_normal(shape).astype(t.dtype))
    return arrays, bindings
