"""Render a loop-IR kernel as Python source for ``numba.njit``.

Parallel loops become ``numba.prange``; the function is compiled eagerly for an explicit
signature (C-contiguous arrays, int64 sizes) so compilation happens when the module is
imported, and ``cache=True`` lets a second process load the machine code from disk.
"""
from __future__ import annotations

import math

from graphc.lower import loopir as L

from .vmath import VMATH, exp_fn, sigmoid_fn

_NP = {"float32": "np.float32", "float64": "np.float64", "int64": "np.int64",
       "int32": "np.int32", "bool": "np.bool_"}
_NB = {"float32": "float32", "float64": "float64", "int64": "int64", "int32": "int32",
       "bool": "boolean"}


class _Renderer:
    def __init__(self, kernel: L.Kernel, fastmath: bool = False):
        self.k = kernel
        self.fastmath = fastmath
        self.types = {b.name: b.dtype for b in kernel.buffers}
        self.ranks = {b.name: b.rank for b in kernel.buffers}
        self.vars: dict[str, str] = {s: "int64" for s in kernel.sizes}

    def const(self, value, dtype: str) -> str:
        if dtype in ("int64", "int32"):
            return str(int(value))
        if dtype == "bool":
            return "True" if value else "False"
        if math.isinf(value):
            text = "np.inf" if value > 0 else "-np.inf"
        elif math.isnan(value):
            text = "np.nan"
        else:
            text = repr(float(value))
        return f"{_NP[dtype]}({text})"

    def typeof(self, e: L.Expr) -> str:
        return L.type_of(e, self.types, self.vars)

    def expr(self, e: L.Expr) -> str:
        if isinstance(e, L.Const):
            return self.const(e.value, e.dtype)
        if isinstance(e, L.Var):
            return e.name
        if isinstance(e, L.Load):
            if self.ranks[e.buf] == 0:
                return f"{e.buf}[0]"
            return f"{e.buf}[{', '.join(self.expr(i) for i in e.index)}]"
        if isinstance(e, L.Bin):
            a, b = self.expr(e.a), self.expr(e.b)
            if e.op in ("max", "min"):
                return f"_{e.op}({a}, {b})"          # NaN propagates (vmath.py)
            return f"({a} {e.op} {b})"
        if isinstance(e, L.Cast):
            inner = self.expr(e.a)
            return inner if self.typeof(e.a) == e.dtype else f"{_NP[e.dtype]}({inner})"
        if isinstance(e, L.Select):
            return f"({self.expr(e.a)} if {self.expr(e.cond)} else {self.expr(e.b)})"
        if isinstance(e, L.Call):
            x = self.expr(e.args[0])
            t = self.typeof(e.args[0])
            one = self.const(1.0, t)
            half = self.const(0.5, t)
            if e.fn == "exp":
                return f"{exp_fn(t, self.fastmath)}({x})"
            if e.fn in ("log", "sqrt", "tanh", "erf"):
                return f"math.{e.fn}({x})"
            if e.fn == "rsqrt":
                return f"({one} / math.sqrt({x}))"
            if e.fn == "neg":
                return f"(-{x})"
            if e.fn == "sigmoid":
                return f"{sigmoid_fn(t, self.fastmath)}({x})"
            if e.fn == "gelu":
                return f"({half} * {x} * ({one} + math.erf({x} * {self.const(1 / math.sqrt(2), t)})))"
            if e.fn == "gelu_tanh":
                c = self.const(math.sqrt(2 / math.pi), t)
                k = self.const(0.044715, t)
                return f"({half} * {x} * ({one} + math.tanh({c} * ({x} + {k} * {x} * {x} * {x}))))"
        raise TypeError(e)

    def stmts(self, stmts, indent: str) -> list[str]:
        out = []
        for s in stmts:
            if isinstance(s, L.Loop):
                rng = "nb.prange" if s.parallel else "range"
                self.vars[s.var] = "int64"
                out.append(f"{indent}for {s.var} in {rng}({self.expr(s.extent)}):")
                out += self.stmts(s.body, indent + "    ") or [indent + "    pass"]
            elif isinstance(s, L.Assign):
                value = s.value
                text = self.expr(value)
                if self.typeof(value) != s.dtype:
                    text = f"{_NP[s.dtype]}({text})"
                self.vars[s.var] = s.dtype
                out.append(f"{indent}{s.var} = {text}")
            elif isinstance(s, L.Store):
                idx = "0" if self.ranks[s.buf] == 0 else \
                    ", ".join(self.expr(i) for i in s.index)
                out.append(f"{indent}{s.buf}[{idx}] = {self.expr(s.value)}")
            else:
                raise TypeError(s)
        return out


PRELUDE = VMATH      # imports, _exp32 and the sigmoids

# Fast-math flags of every kernel unless fastmath=True asks for all of them: ``reassoc``
# lets reductions (row sums, rmsnorm's sum of squares) vectorise, ``contract`` makes
# fused multiply-adds; no flag assumes away NaN, infinities or signed zeros, so special
# values still propagate (rmsnorm over 512 x 1024 float32: 0.70 -> 0.2 ms).
DEFAULT_FLAGS = '{"contract", "reassoc"}'     # source text: a set's repr is not stable


def signature(kernel: L.Kernel) -> str:
    args = []
    for b in kernel.buffers:
        dims = ", ".join([":"] * (max(b.rank, 1) - 1) + ["::1"])
        args.append(f"{_NB[b.dtype]}[{dims}]")
    args += ["int64"] * len(kernel.sizes)
    return f"void({', '.join(args)})"


def render_kernel(kernel: L.Kernel, fastmath: bool = False) -> str:
    """Python source of one kernel module: the prelude and ``def kernel(...)``. NumPy's
    error model: a float division by zero gives inf or NaN (the mean of nothing is NaN),
    not Python's ZeroDivisionError."""
    r = _Renderer(kernel, fastmath)
    body = r.stmts(kernel.body, "    ")
    parallel = any(isinstance(n, L.Loop) and n.parallel for n in L.walk(kernel.body))
    params = [b.name for b in kernel.buffers] + list(kernel.sizes)
    comment = "\n".join("# " + line for line in L.format_kernel(kernel).splitlines())
    flags = "True" if fastmath else DEFAULT_FLAGS
    return (f"{PRELUDE}\n{comment}\n"
            f"@nb.njit({signature(kernel)!r}, parallel={parallel}, fastmath={flags}, "
            f"error_model='numpy', cache=True, nogil=True)\n"
            f"def kernel({', '.join(params)}):\n" + "\n".join(body or ["    pass"]) + "\n")
