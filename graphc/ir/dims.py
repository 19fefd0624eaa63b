"""Symbolic dimensions.

A dim is a Python ``int`` or a :class:`Sym`: a polynomial with integer coefficients over
named symbols (``S``, ``2*S``, ``S*T``, ``S+1``). Plain symbols come from input specs; the
rest arise from reshape, concat and slicing. Equality is structural: ``S`` and ``T`` are
different sizes, and ``S`` never equals an int, so shape mismatches are caught at trace time.
A symbol binds to one size per call (:func:`evaluate`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

from ..errors import TraceError

Dim = Union[int, "Sym"]


class SymbolicSizeError(TraceError, TypeError):
    """A symbolic dim used where Python or NumPy needs a fixed int, or combined with a
    non-int (``S * 0.5``). Also a TypeError, which is what ``__index__`` callers expect."""


def _mono_str(mono: tuple[str, ...]) -> str:
    return "*".join(mono)


@dataclass(frozen=True)
class Sym:
    """Polynomial over symbols: ``terms`` maps a sorted tuple of symbol names (a monomial;
    the empty tuple is the constant term) to its nonzero integer coefficient."""

    terms: tuple[tuple[tuple[str, ...], int], ...]

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def of(name: str) -> "Sym":
        if not name.isidentifier():
            raise ValueError(f"symbol name {name!r} is not an identifier")
        return Sym((((name,), 1),))

    @staticmethod
    def _make(d: dict) -> Dim:
        items = tuple(sorted((m, c) for m, c in d.items() if c != 0))
        if not items:
            return 0
        if len(items) == 1 and items[0][0] == ():
            return items[0][1]
        return Sym(items)

    def _dict(self) -> dict:
        return dict(self.terms)

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(s for m, _ in self.terms for s in m)

    # -- arithmetic ----------------------------------------------------------------------
    def __add__(self, other: Dim) -> Dim:
        d = self._dict()
        for m, c in _as_dict(other).items():
            d[m] = d.get(m, 0) + c
        return Sym._make(d)

    __radd__ = __add__

    def __neg__(self) -> Dim:
        return Sym._make({m: -c for m, c in self.terms})

    def __sub__(self, other: Dim) -> Dim:
        if isinstance(other, Sym):
            return self + (-other)
        return self + Sym._make({m: -c for m, c in _as_dict(other).items()})

    def __rsub__(self, other: Dim) -> Dim:
        return (-self) + other

    def __mul__(self, other: Dim) -> Dim:
        d: dict = {}
        for m1, c1 in self.terms:
            for m2, c2 in _as_dict(other).items():
                m = tuple(sorted(m1 + m2))
                d[m] = d.get(m, 0) + c1 * c2
        return Sym._make(d)

    __rmul__ = __mul__

    def __floordiv__(self, other: Dim) -> Dim:
        q = exact_div(self, other)
        if q is None:
            raise ValueError(f"{self} is not divisible by {other}")
        return q

    def __rfloordiv__(self, other: Dim) -> Dim:
        q = exact_div(other, self)
        if q is None:
            raise ValueError(f"{other} is not divisible by {self}")
        return q

    # -- comparisons ---------------------------------------------------------------------
    # Sizes are >= 0, so a comparison that holds for every size (S + 1 > S, 2*S >= S,
    # S >= 0) has an answer; any other (S > 10) depends on the call, and Python control
    # flow on it would bake one branch into the graph: a SymbolicSizeError says so.
    def _compare(self, other, op: str) -> bool:
        if not isinstance(other, Sym) and (isinstance(other, bool)
                                           or not isinstance(other, (int, np.integer))):
            return NotImplemented
        d = self - other
        diff = d._dict() if isinstance(d, Sym) else {(): int(d)}
        coefs = [c for m, c in diff.items() if m != ()]
        const = diff.get((), 0)
        if all(c >= 0 for c in coefs) and const >= 0:
            strict = const > 0      # self - other >= 0 (> 0) for every size
            answer = {">=": True, ">": True if strict else None, "<": False,
                      "<=": False if strict else None}[op]
            if answer is not None:
                return answer
        if all(c <= 0 for c in coefs) and const <= 0:
            strict = const < 0      # self - other <= 0 (< 0) for every size
            answer = {"<=": True, "<": True if strict else None, ">": False,
                      ">=": False if strict else None}[op]
            if answer is not None:
                return answer
        from .node import capture_loc
        raise SymbolicSizeError(
            f"`{self} {op} {other}` on a symbolic dim: its value differs from call to call, "
            "so Python control flow (if / while / min() / max()) cannot depend on it; write "
            "the code for every size (graphc.where with a mask, slices with symbolic bounds, "
            "graphc.minimum on tensors), or trace with a fixed size in graphc.spec",
            loc=capture_loc())

    def __lt__(self, other):
        return self._compare(other, "<")

    def __le__(self, other):
        return self._compare(other, "<=")

    def __gt__(self, other):
        return self._compare(other, ">")

    def __ge__(self, other):
        return self._compare(other, ">=")

    def __index__(self):
        # range(S), ndarray[:S], int(S) land here: name the user's line and the way out.
        from .node import capture_loc
        raise SymbolicSizeError(f"symbolic dim {self} has no fixed size at trace time; "
                                "index a traced tensor instead of a NumPy array "
                                "(graphc.constant(table)[:S])", loc=capture_loc())

    def __str__(self) -> str:
        out = []
        for m, c in sorted(self.terms, key=lambda t: (-len(t[0]), t[0])):
            if m == ():
                body = str(abs(c))
            elif abs(c) == 1:
                body = _mono_str(m)
            else:
                body = f"{abs(c)}*{_mono_str(m)}"
            sign = "-" if c < 0 else "+"
            out.append((sign, body))
        text = ("-" if out[0][0] == "-" else "") + out[0][1]
        for sign, body in out[1:]:
            text += f"{sign}{body}"
        return text

    __repr__ = __str__


def _as_dict(x: Dim) -> dict:
    if isinstance(x, Sym):
        return x._dict()
    if isinstance(x, bool) or not hasattr(x, "__index__"):
        # int(1.5) would silently turn S * 1.5 into S.
        from .node import capture_loc
        raise SymbolicSizeError(f"a symbolic dim only combines with ints and other dims, "
                                f"got {x!r} of type {type(x).__name__}", loc=capture_loc())
    x = x.__index__()
    return {(): x} if x != 0 else {}


def exact_div(a: Dim, b: Dim) -> Dim | None:
    """``a / b`` when it is exact for every binding of the symbols, else None.
    Handles what reshape needs: a divisor that is a single monomial."""
    if not isinstance(a, Sym) and not isinstance(b, Sym):
        return a // b if b != 0 and a % b == 0 else None
    bd = _as_dict(b)
    if len(bd) != 1:
        # A divisor with several terms (S-1, S+T) only divides itself here.
        return 1 if a == b else None
    (bm, bc), = bd.items()
    if bc == 0:
        return None
    out: dict = {}
    for m, c in _as_dict(a).items():
        rest = list(m)
        for s in bm:
            if s not in rest:
                return None
            rest.remove(s)
        if c % bc:
            return None
        out[tuple(rest)] = c // bc
    return Sym._make(out)


def is_symbolic(d: Dim) -> bool:
    return isinstance(d, Sym)


def as_dim(d) -> Dim:
    """Normalise a user-given dim: ints stay ints, strings become symbols."""
    if isinstance(d, Sym):
        return d
    if isinstance(d, str):
        d = d.strip()
        if d.lstrip("-").isdigit():
            return int(d)
        return Sym.of(d)
    if isinstance(d, bool):
        raise TypeError("a dim cannot be a bool")
    try:
        return int(d.__index__())
    except (AttributeError, TypeError):
        raise TypeError(f"a dim must be an int or a symbol name, got {d!r}") from None


def evaluate(d: Dim, bindings: Mapping[str, int]) -> int:
    """Size of ``d`` under ``bindings`` (symbol name -> int)."""
    if not isinstance(d, Sym):
        return int(d)
    total = 0
    for m, c in d.terms:
        v = c
        for s in m:
            if s not in bindings:
                raise KeyError(s)
            v *= bindings[s]
        total += v
    return total


def dim_str(d: Dim) -> str:
    return str(d)


def prod(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = out * d if isinstance(out, Sym) else (d * out if isinstance(d, Sym) else out * d)
    return out
