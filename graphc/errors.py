"""Every failure a user can cause raises a subclass of :class:`GraphcError`.

Messages name the op, the node, the shapes involved and the user's source line, so a
mistake is reported where it was written, not deep inside a kernel.
"""
from __future__ import annotations


class GraphcError(Exception):
    """Base class of every error graphc raises on bad user input."""

    def __init__(self, message: str, *, op: str | None = None, node: str | None = None,
                 shapes=None, loc=None):
        self.message = message
        self.op = op
        self.node = node
        self.shapes = shapes
        self.loc = loc
        parts = [message]
        where = []
        if node is not None:
            where.append(f"node {node}")
        if op is not None:
            where.append(f"op '{op}'")
        if shapes:
            where.append("shapes " + ", ".join(str(s) for s in shapes))
        if where:
            parts.append("  (" + "; ".join(where) + ")")
        if loc is not None:
            parts.append(f"\n  at {loc.describe()}")
        super().__init__("".join(parts))


class ShapeError(GraphcError):
    """Shapes that do not fit together (trace time)."""


class DTypeError(GraphcError):
    """A dtype an op does not accept, or two dtypes that do not match."""


class UnknownOpError(GraphcError):
    """An op name that is not in the registry."""


class AttrError(GraphcError):
    """A bad attribute value for an op (axis out of range, bad k, ...)."""


class InputError(GraphcError):
    """A wrong array passed to a compiled executable at call time."""


class SymbolError(InputError):
    """A symbolic dimension bound to two different sizes in one call."""


class VerifyError(GraphcError):
    """The IR is inconsistent (a pass or a hand-built graph broke an invariant)."""


class BackendError(GraphcError):
    """An unknown backend, or an op a backend cannot run."""


class TraceError(GraphcError):
    """Misuse of the tracing frontend (bad spec, bad return value, ...)."""


class RegistrationError(GraphcError, ValueError):
    """A bad op, pass or rule registration (duplicate name, unknown kind, ...)."""


class CheckpointError(GraphcError):
    """A checkpoint that cannot be loaded: a missing, extra or wrongly shaped tensor, a
    file that is not safetensors, a bad config.json. The message names the tensor/file."""


class LibraryFallbackWarning(UserWarning):
    """A compiled backend runs an opaque op through its NumPy reference (no native kernel
    for it there): correct, but slow. Every built-in op has a native kernel on numba and
    cupy (the op matrix, tests/ops/test_op_matrix.py, fails on this warning)."""
