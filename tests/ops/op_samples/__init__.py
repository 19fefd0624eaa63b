"""The samples of the op matrix (tests/ops/test_op_matrix.py): every registered op, each
with a traced use and the inputs to run it on, one module per op family.

A sample is ``Sample(op, fn, inputs)``: ``fn`` uses the op (it must appear in the traced
graph); ``inputs`` are ``In(shape, dtype, kind)`` with shapes over the family's symbols
(``S``, ``T``), bound per call by :data:`BINDINGS` (odd sizes, a size of 1). ``kind`` says
how to draw the data: ``randn`` (no exact zeros), ``positive``, ``nonzero`` (divisors),
``unit`` (in (-0.9, 0.9)), ``ints`` (small non-zero ints), ``index:N`` (ints in [0, N)),
``bool``. Add an op, add its samples to the module of its family (any module of this
package with a SAMPLES list is collected): the matrix runs them on
every backend against the float64 reference, and fails for an op with no sample.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from arrays import ints, nonzero, positive, randn

# Symbol bindings of the calls every sample is run with (T >= S: causal masks fit).
BINDINGS = [{"S": 1, "T": 3}, {"S": 5, "T": 9}, {"S": 17, "T": 17}]


@dataclass
class In:
    shape: tuple
    dtype: str = "float32"
    kind: str = "randn"


@dataclass
class Sample:
    op: str
    fn: Callable
    inputs: list
    name: str = ""
    tol: float | None = None            # float32 tolerance (default 1e-5)
    bindings: list = field(default_factory=lambda: BINDINGS)
    family: str = ""                    # set by all_samples: the module's name

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}" if self.name else self.op


def draw(rng, inp: In, env: dict) -> np.ndarray:
    shape = tuple(env[d] if isinstance(d, str) else d for d in inp.shape)
    kind, _, arg = inp.kind.partition(":")
    if kind == "bool":
        return rng.random(shape) < 0.5
    if kind == "index":
        return rng.integers(0, int(arg), shape).astype(inp.dtype)
    if kind == "ints" or np.dtype(inp.dtype).kind in "iu":
        return ints(rng, shape, inp.dtype)
    if kind == "positive":
        return positive(rng, shape, inp.dtype)
    if kind == "nonzero":
        return nonzero(rng, shape, inp.dtype)
    if kind == "unit":
        return np.asarray(rng.uniform(-0.9, 0.9, shape), inp.dtype)
    return randn(rng, shape, inp.dtype)


def all_samples() -> list[Sample]:
    """The SAMPLES of every module of this package (one per op family)."""
    import importlib
    import pkgutil
    out = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for s in mod.SAMPLES:
            s.family = info.name
            out.append(s)
    return out
