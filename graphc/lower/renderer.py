"""The base every loop-IR renderer shares (tinygrad's CStyleLanguage is the model).

A renderer turns loop-IR expressions into source text through one table,
``code_for_op``: for every binary operator (``loopir.BIN_OPS``) and math function
(``loopir.FUNCTIONS``) a function ``(renderer, dtype, *operand_texts) -> str``, where
``dtype`` is the operand type (the promoted type of both operands of a binary operator).
A language subclasses :class:`Renderer`, gives its table, and overrides the few things
that really differ: literals, casts, loads, selects, and how statements and loops are
written (Python for Numba, C with a thread mapping for CUDA). :func:`missing_ops` says
which of the loop IR's operators a table lacks, so a test can require every renderer
to implement all of them.
"""
from __future__ import annotations

from typing import Callable

from ..errors import BackendError
from . import loopir as L


def missing_ops(table: dict) -> list[str]:
    """The loop-IR operators and functions that ``table`` has no rendering for."""
    return [op for op in (*L.BIN_OPS, *L.FUNCTIONS) if op not in table]


class Renderer:
    """Expression rendering for one kernel; subclasses render its statements."""

    code_for_op: dict[str, Callable] = {}
    language = "?"

    def __init__(self, kernel: L.Kernel):
        self.k = kernel
        self.types = {b.name: b.dtype for b in kernel.buffers}
        self.ranks = {b.name: b.rank for b in kernel.buffers}
        self.vars: dict[str, str] = {s: "int64" for s in kernel.sizes}

    # -- hooks a language overrides ----------------------------------------------------
    def literal(self, value, dtype: str) -> str:
        raise NotImplementedError

    def load(self, buf: str, index) -> str:
        raise NotImplementedError

    def cast(self, text: str, src: str, dst: str) -> str:
        raise NotImplementedError

    def select(self, cond: str, a: str, b: str, dtype: str) -> str:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------
    def typeof(self, e: L.Expr) -> str:
        return L.type_of(e, self.types, self.vars)

    def op(self, name: str, dtype: str, *args: str) -> str:
        fn = self.code_for_op.get(name)
        if fn is None:
            raise BackendError(f"kernel {self.k.name}: the {self.language} renderer has no "
                               f"rendering for {name!r} (of {dtype})")
        return fn(self, dtype, *args)

    def expr(self, e: L.Expr) -> str:
        if isinstance(e, L.Const):
            return self.literal(e.value, e.dtype)
        if isinstance(e, L.Var):
            return e.name
        if isinstance(e, L.Load):
            return self.load(e.buf, e.index)
        if isinstance(e, L.Bin):
            ta, tb = self.typeof(e.a), self.typeof(e.b)
            t = ta if e.op in L.LOGIC_OPS else L.promote(ta, tb)
            return self.op(e.op, t, self.operand(e.a, ta, t, e), self.operand(e.b, tb, t, e))
        if isinstance(e, L.Call):
            t = self.typeof(e.args[0])
            return self.op(e.fn, t, *(self.expr(a) for a in e.args))
        if isinstance(e, L.Cast):
            src = self.typeof(e.a)
            inner = self.expr(e.a)
            return inner if src == e.dtype else self.cast(inner, src, e.dtype)
        if isinstance(e, L.Select):
            t = L.promote(self.typeof(e.a), self.typeof(e.b))
            return self.select(self.expr(e.cond), self.expr(e.a), self.expr(e.b), t)
        raise BackendError(f"kernel {self.k.name}: not a loop-IR expression: {e!r}")

    def operand(self, e: L.Expr, have: str, want: str, parent: L.Bin) -> str:
        """An operand of a binary operator, as text (a language may convert it to the
        promoted type ``want``)."""
        return self.expr(e)
