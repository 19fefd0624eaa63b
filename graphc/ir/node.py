"""IR nodes and the user's source location attached to each."""
from __future__ import annotations

import linecache
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from .types import TensorType


@dataclass(frozen=True)
class SourceLoc:
    """Where in the user's code a node was made."""

    filename: str
    lineno: int
    function: str = ""

    @property
    def line(self) -> str:
        return linecache.getline(self.filename, self.lineno).strip()

    @property
    def short(self) -> str:
        return f"{os.path.basename(self.filename)}:{self.lineno}"

    def describe(self) -> str:
        text = f"{self.filename}:{self.lineno}"
        if self.function:
            text += f" in {self.function}"
        src = self.line
        if src:
            text += f": {src}"
        return text

    def __str__(self) -> str:
        return self.short


# Frames from these modules are graphc's own; a location is the first frame outside them.
# graphc.models is user-level code (the model builders), so its lines are reported.
_INTERNAL_PREFIXES = ("graphc.", "graphc")
_USER_PREFIXES = ("graphc.models",)


def _is_internal(module: str) -> bool:
    if module.startswith(_USER_PREFIXES):
        return False
    return module == "graphc" or module.startswith("graphc.")


def capture_loc(skip: int = 1) -> SourceLoc | None:
    """The innermost stack frame that belongs to user code (not graphc internals)."""
    frame = sys._getframe(skip)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not _is_internal(module):
            return SourceLoc(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return None


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes ``warnings.warn``, called by this function's caller,
    name the user's line: the first frame outside graphc internals."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and _is_internal(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
        level += 1
    return level


@dataclass
class Node:
    """One op application. ``inputs`` are node ids; the node produces one tensor."""

    id: int
    op: str
    inputs: tuple[int, ...]
    attrs: dict[str, Any]
    type: TensorType
    loc: SourceLoc | None = None
    # Free-form annotations passes may attach (e.g. a fusion group id); not semantics.
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"%{self.id}"
