"""Source locations of imported nodes: the ONNX node (name, op type, index), not a line
of Python."""
from __future__ import annotations

from dataclasses import dataclass

from ...ir.node import SourceLoc


@dataclass(frozen=True)
class OnnxLoc(SourceLoc):
    """``filename`` is the model (its path, or ``<onnx model NAME>``), ``lineno`` the
    node's index in the graph, ``function`` ``"OpType 'node name'"``."""

    op_type: str = ""
    node_name: str = ""

    @property
    def line(self) -> str:
        return ""

    @property
    def short(self) -> str:
        if self.op_type.startswith("graph "):
            return f"ONNX {self.op_type}"
        return f"ONNX {self.op_type} node {self.node_name!r}"

    def describe(self) -> str:
        if self.op_type.startswith("graph "):
            return f"the {self.op_type} of ONNX model {self.filename}"
        return (f"ONNX node {self.node_name!r} (op type {self.op_type}, node #{self.lineno} "
                f"of {self.filename})")

    def __str__(self) -> str:
        return self.short
