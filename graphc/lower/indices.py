"""Index simplification of a loop-IR kernel by value ranges.

Movement ops remap indices by linearising and splitting (``reshape``), which leaves
floor divisions and remainders by symbolic sizes in the innermost loop:
``((i0 * seq) + i3) // (batch * seq)`` with ``i0 < batch`` and ``i3 < seq`` is always 0,
but an integer division by a run-time value costs tens of cycles and keeps the loop
from vectorising. This pass follows each integer variable's range (loop variables
``0 .. extent - 1``, variables assigned once from them) as polynomials over the size
symbols (graphc/ir/dims.py) and rewrites, bottom-up:

* ``x // d`` to 0 and ``x % d`` to ``x`` when ``0 <= x < d``; with ``x = q * d + r``
  (the terms whose coefficient ``d`` divides, and the rest ``r`` in ``[0, d)``),
  ``x // d`` to ``q`` and ``x % d`` to ``r``;
* ``max`` / ``min`` whose operands' ranges do not overlap (an index clamp that cannot
  bind), comparisons the ranges decide, and selects on a decided condition;
* a variable assigned an integer constant (``i1 = 0``) to that constant.

Then the integer divisions and remainders that do not change inside a sequential loop
are computed once before it.

A bound is proved when the difference of two polynomials, written in ``size - 1`` for
each size, has no negative coefficient: it holds for every binding of the sizes to
values >= 1. (A size of 0 empties every loop whose extent it divides, so no rewritten
expression runs under it.)
"""
from __future__ import annotations

from ..ir.dims import Sym, exact_div
from . import loopir as L
from .exprs import dim_expr

_INT = "int64"


def _nonneg(p) -> bool:
    """``p >= 0`` for every binding of its sizes to values >= 1: the polynomial in
    ``s - 1`` (each size shifted) has no negative coefficient."""
    if not isinstance(p, Sym):
        return p >= 0
    if all(c >= 0 for _, c in p.terms):
        return True
    shifted = 0
    for mono, c in p.terms:
        term = c
        for name in mono:
            term = term * (Sym.of(name) + 1)
        shifted = shifted + term
    return not isinstance(shifted, Sym) and shifted >= 0 or \
        isinstance(shifted, Sym) and all(c >= 0 for _, c in shifted.terms)


def _le(a, b) -> bool:
    return a is not None and b is not None and _nonneg(b - a)


class _Simplifier:
    def __init__(self, kernel: L.Kernel):
        self.sizes = set(kernel.sizes)
        self.ranges: dict = {}          # int variable -> (lo, hi); hi may be None
        self.consts: dict = {}          # variable -> the Const it was assigned
        counts: dict = {}
        for n in L.walk(kernel.body):
            if isinstance(n, (L.Assign, L.Reduce)):
                counts[n.var] = counts.get(n.var, 0) + (1 if isinstance(n, L.Assign) else 2)
        self.once = {v for v, c in counts.items() if c == 1}
        self.memo: dict = {}

    # -- polynomials and ranges ---------------------------------------------------------
    def poly(self, e):
        """``e`` as a polynomial over the size symbols, or None."""
        if isinstance(e, L.Const):
            return e.value if e.dtype == _INT else None
        if isinstance(e, L.Var):
            return Sym.of(e.name) if e.name in self.sizes else None
        if isinstance(e, L.Bin) and e.op in ("+", "-", "*"):
            a, b = self.poly(e.a), self.poly(e.b)
            if a is None or b is None:
                return None
            return a + b if e.op == "+" else a - b if e.op == "-" else a * b
        return None

    def range(self, e):
        """(lo, hi) bounds of integer expression ``e`` as polynomials (hi None:
        unbounded above), or None when nothing is known."""
        p = self.poly(e)
        if p is not None:
            return (p, p)
        if isinstance(e, L.Var):
            return self.ranges.get(e.name)
        if not isinstance(e, L.Bin):
            return None
        ra, rb = self.range(e.a), self.range(e.b)
        if ra is None or rb is None:
            return None
        (la, ha), (lb, hb) = ra, rb
        add = (lambda x, y: None if x is None or y is None else x + y)
        if e.op == "+":
            return (la + lb, add(ha, hb))
        if e.op == "-":
            return (la - hb, ha - lb) if hb is not None and ha is not None else None
        if e.op == "*" and _nonneg(la) and _nonneg(lb):
            return (la * lb, None if ha is None or hb is None else ha * hb)
        if e.op in ("//", "%") and _nonneg(la) and lb == hb and _le(1, lb):
            d = lb
            if e.op == "%":
                return (la, ha) if _le(ha, d - 1) else (0, d - 1)
            m = exact_div(ha + 1, d) if ha is not None else None
            lo = exact_div(la, d)
            return (lo if lo is not None else 0,
                    m - 1 if m is not None else ha)
        if e.op == "max":          # max(a, b) >= a: la is a lower bound either way
            hi = None if ha is None or hb is None else \
                ha if _le(hb, ha) else hb if _le(ha, hb) else None
            return (lb if _le(la, lb) else la, hi)
        if e.op == "min":          # min(a, b) <= a: ha (or hb) is an upper bound
            lo = la if _le(la, lb) else lb if _le(lb, la) else None
            if lo is None:
                return None
            return (lo, hb if ha is None or (hb is not None and _le(hb, ha)) else ha)
        return None

    def within(self, e, lo, hi) -> bool:
        """``lo <= e <= hi`` for every binding of the sizes."""
        r = self.range(e)
        return r is not None and _le(lo, r[0]) and _le(r[1], hi)

    def terms(self, e):
        """``e`` as [(coefficient polynomial, atom or None)] summing to it."""
        p = self.poly(e)
        if p is not None:
            return [(p, None)]
        if isinstance(e, L.Bin) and e.op == "+":
            return self.terms(e.a) + self.terms(e.b)
        if isinstance(e, L.Bin) and e.op == "*":
            for x, y in ((e.a, e.b), (e.b, e.a)):
                p = self.poly(x)
                if p is not None:
                    return [(p * c, a) for c, a in self.terms(y)]
        return [(1, e)]

    @staticmethod
    def build(terms) -> L.Expr:
        out: L.Expr = L.c(0)
        for c, a in terms:
            out = L.add(out, dim_expr(c) if a is None else L.mul(dim_expr(c), a))
        return out

    def divmod_(self, op, x, d_expr):
        d = self.poly(d_expr)
        if d is None or not _le(1, d):
            return None
        if self.within(x, 0, d - 1):
            return L.c(0) if op == "//" else x
        q, r = [], []          # x = q * d + r: x // d = q for any integer q when 0 <= r < d
        for c, a in self.terms(x):
            k = exact_div(c, d)
            if k is not None and k != 0:
                q.append((k, a))
            else:
                r.append((c, a))
        if not q:
            return None
        rest = self.build(r)
        if not self.within(rest, 0, d - 1):
            return None
        return self.build(q) if op == "//" else rest

    # -- rewriting ----------------------------------------------------------------------
    def expr(self, e):
        key = id(e)
        hit = self.memo.get(key)
        if hit is not None and hit[0] is e:
            return hit[1]
        out = self._expr(e)
        self.memo[key] = (e, out)
        return out

    def _expr(self, e):
        if isinstance(e, L.Var):
            return self.consts.get(e.name, e)
        if isinstance(e, L.Const):
            return e
        if isinstance(e, L.Load):
            return L.Load(e.buf, tuple(self.expr(i) for i in e.index))
        if isinstance(e, L.Cast):
            return L.Cast(self.expr(e.a), e.dtype)
        if isinstance(e, L.Call):
            return L.Call(e.fn, tuple(self.expr(a) for a in e.args))
        if isinstance(e, L.Select):
            cond = self.expr(e.cond)
            if isinstance(cond, L.Const) and cond.dtype == "bool":
                return self.expr(e.a) if cond.value else self.expr(e.b)
            a, b = self.expr(e.a), self.expr(e.b)
            if a == b:          # both sides alike (a concat of one tensor broadcast, as
                return a        # DeepSeek's rope key over 16 heads: 16 equal branches)
            return L.Select(cond, a, b)
        if not isinstance(e, L.Bin):
            return e
        a, b = self.expr(e.a), self.expr(e.b)
        if e.op == "+":
            return L.add(a, b)
        if e.op == "*":
            return L.mul(a, b)
        if e.op in ("//", "%"):
            s = self.divmod_(e.op, a, b)
            if s is not None:
                return s
        if e.op in ("max", "min"):     # operands whose ranges do not overlap
            ra, rb = self.range(a), self.range(b)
            if ra is not None and rb is not None:
                if _le(rb[1], ra[0]):          # b <= a
                    return a if e.op == "max" else b
                if _le(ra[1], rb[0]):          # a <= b
                    return b if e.op == "max" else a
        if e.op in ("<", "<=", ">", ">="):
            decided = self.compare(e.op, a, b)
            if decided is not None:
                return L.Const(decided, "bool")
        return L.Bin(e.op, a, b)

    def compare(self, op, a, b):
        if op in (">", ">="):
            a, b, op = b, a, "<" if op == ">" else "<="
        ra, rb = self.range(a), self.range(b)
        if ra is None or rb is None:
            return None
        strict = op == "<"
        ha, hb = ra[1], rb[1]
        if ha is not None and _le(ha + 1 if strict else ha, rb[0]):
            return True                                   # a < b  <=>  a + 1 <= b
        if hb is not None and _le(hb if strict else hb + 1, ra[0]):
            return False                                  # a >= b, or a > b for <=
        return None

    def stmts(self, body):
        out = []
        for s in body:
            if isinstance(s, L.Loop):
                ext = self.expr(s.extent)
                p = self.poly(ext)
                self.ranges[s.var] = (0, p - 1 if p is not None else None)
                out.append(L.Loop(s.var, ext, self.stmts(s.body), s.parallel))
            elif isinstance(s, L.Assign):
                v = self.expr(s.value)
                if s.var in self.once and s.dtype == _INT:
                    if isinstance(v, L.Const):
                        self.consts[s.var] = v
                    else:
                        r = self.range(v)
                        if r is not None:
                            self.ranges[s.var] = r
                out.append(L.Assign(s.var, v, s.dtype))
            elif isinstance(s, L.Store):
                out.append(L.Store(s.buf, tuple(self.expr(i) for i in s.index),
                                   self.expr(s.value)))
            elif isinstance(s, L.Reduce):
                out.append(L.Reduce(s.var, s.op, self.expr(s.value)))
            else:
                raise TypeError(s)
        return out


def _defined(stmts) -> set:
    """Variables a statement list assigns or loops over (at any depth)."""
    return {n.var for n in L.walk(stmts) if isinstance(n, (L.Loop, L.Assign, L.Reduce))}


class _Hoist:
    """Integer divisions and remainders that do not change inside a sequential loop,
    computed once before it (``out[i0 // seq, i0 % seq, i1]`` in a loop over i1: the
    division per element kept the compiler from vectorising the loop)."""

    def __init__(self, kernel):
        self.ints = set(kernel.sizes) | {n.var for n in L.walk(kernel.body)
                                         if isinstance(n, L.Loop)
                                         or isinstance(n, L.Assign) and n.dtype == _INT}
        self.taken = _defined(kernel.body) | set(kernel.sizes)
        self.count = 0

    def invariant(self, e, inside) -> bool:
        """An int expression over variables not set inside the loop, no loads."""
        if isinstance(e, L.Const):
            return e.dtype == _INT
        if isinstance(e, L.Var):
            return e.name in self.ints and e.name not in inside
        if isinstance(e, L.Bin) and e.op in ("+", "-", "*", "//", "%", "max", "min"):
            return self.invariant(e.a, inside) and self.invariant(e.b, inside)
        return False

    def lift(self, stmts, inside, pre):
        """``stmts`` with each invariant division or remainder a variable assigned in
        ``pre`` (one per distinct expression)."""
        names: dict = {}

        def fn(e):
            if not (isinstance(e, L.Bin) and e.op in ("//", "%") and self.invariant(e, inside)):
                return None
            if e not in names:
                name = f"h{self.count}"
                while name in self.taken:
                    self.count += 1
                    name = f"h{self.count}"
                self.count += 1
                names[e] = name
                pre.append(L.Assign(name, e, _INT))
            return L.Var(names[e])
        return L.rewrite(stmts, fn)

    def stmts(self, stmts):
        out = []
        for s in stmts:
            if not isinstance(s, L.Loop):
                out.append(s)
                continue
            body = self.stmts(s.body)
            if not s.parallel:       # a parallel loop's iterations are the kernel's split
                pre: list = []
                body = self.lift(body, _defined([s]), pre)
                out += pre
            out.append(L.Loop(s.var, s.extent, body, s.parallel))
        return out


def simplify_indices(kernel: L.Kernel) -> L.Kernel:
    """``kernel`` with its index arithmetic simplified by value ranges, and the integer
    divisions that do not change in a sequential loop hoisted out of it (a new kernel)."""
    body = _Simplifier(kernel).stmts(kernel.body)
    k = L.Kernel(kernel.name, kernel.buffers, kernel.sizes, body, dict(kernel.meta))
    k.body = _Hoist(k).stmts(k.body)
    return k
