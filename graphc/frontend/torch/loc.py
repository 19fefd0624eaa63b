"""Source locations of nodes imported from torch: the user's PyTorch line, taken from the
FX node's ``stack_trace`` (the innermost frame of it), plus the FX node and ATen op."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ...ir.node import SourceLoc

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


@dataclass(frozen=True)
class TorchLoc(SourceLoc):
    """``filename:lineno in function`` of the user's model (or ``<torch>`` with no stack
    trace); ``aten_op`` and ``fx_node`` name the node that was translated."""

    aten_op: str = ""
    fx_node: str = ""

    @property
    def short(self) -> str:
        if self.lineno:
            return super().short
        return f"FX node {self.fx_node!r} ({self.aten_op})"

    def describe(self) -> str:
        what = f"FX node {self.fx_node!r} ({self.aten_op})"
        if not self.lineno:
            return what
        return f"{super().describe()}  [{what}]"

    def __str__(self) -> str:
        return self.short


def loc_of(node, aten_op: str) -> TorchLoc:
    """The location of an FX node: the last frame of its stack trace (the user's line)."""
    trace = node.meta.get("stack_trace") or ""
    # the innermost frame outside graphc and torch (code run from a string has none)
    frames = [f for f in _FRAME.findall(trace) if not _internal(f[0])]
    if frames:
        f, line, fn = frames[-1]
        return TorchLoc(f, int(line), fn, aten_op, node.name)
    return TorchLoc("<torch>", 0, "", aten_op, node.name)


_GRAPHC_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _internal(filename: str) -> bool:
    import sys
    path = os.path.abspath(filename)
    torch = sys.modules.get("torch")
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__)) if torch else None
    return path.startswith(_GRAPHC_DIR + os.sep) or bool(
        torch_dir and path.startswith(torch_dir + os.sep))
