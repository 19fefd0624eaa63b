"""The table from ONNX op type to its translation function.

A translation function takes the node's :class:`~.context.NodeCtx` and returns its
outputs (a graphc Tensor, a :class:`~.context.Known` value computed at import, or None
for an optional output it does not make), one or a list. Each op family's module
registers its functions with :func:`onnx_op`; the ops are those of the default domain
(``""`` / ``"ai.onnx"``)."""
from __future__ import annotations

from typing import Callable

OPS: dict[str, Callable] = {}


def onnx_op(*op_types: str):
    def deco(fn):
        for t in op_types:
            if t in OPS:
                raise ValueError(f"ONNX op {t} translated twice")
            OPS[t] = fn
        return fn
    return deco


def load_families() -> dict[str, Callable]:
    """Import every family module (each registers its ops) and return the table."""
    from . import attention, elementwise, linalg, movement, nn, reduction, shape  # noqa: F401
    return OPS
