"""The table from ATen op (``"aten.add.Tensor"``) to its translation function.

A translation function takes the node's :class:`~.context.NodeCtx` and returns the
node's value: a graphc Tensor, a Python number / symbolic dim, or a tuple of them (ops
with several outputs; FX ``getitem`` picks one). Each family module registers its
functions with :func:`aten_op`."""
from __future__ import annotations

from typing import Callable

OPS: dict[str, Callable] = {}


def aten_op(*names: str):
    def deco(fn):
        for n in names:
            key = n if n.startswith(("aten.", "operator.", "prims.", "transformers.")) \
                else "aten." + n
            if key in OPS:
                raise ValueError(f"ATen op {key} translated twice")
            OPS[key] = fn
        return fn
    return deco


def load_families() -> dict[str, Callable]:
    """Import every family module (each registers its ops) and return the table."""
    from . import (creation, elementwise, indexing, linalg, movement, nn,  # noqa: F401
                   reduction, selection)
    return OPS
