"""Render a loop-IR kernel as Python source for ``numba.njit``.

A kernel whose body is one parallel loop (every kernel lowering makes: a loop over the
output's rows) is rendered serial over a range of that loop, ``lo .. hi``, the function's
last two arguments: the runtime splits the loop over the backend's own threads
(threads.py) when the work is large enough, and calls it once with the whole range
otherwise. Numba compiles such a serial function ~3x faster than the same loop as
``numba.prange`` (0.15 vs 0.45 s of CPU for a row kernel; the parfor passes and the
OpenMP outlining are the difference), and the cores then have one thread pool, not two.
Any other parallel loop becomes ``numba.prange``. The function is compiled eagerly for an
explicit signature (C-contiguous arrays, int64 sizes) so compilation happens when the
module is imported, and ``cache=True`` lets a second process load the machine code from
disk.
"""
from __future__ import annotations

import math

from graphc.lower import loopir as L
from graphc.lower.renderer import Renderer

from .vmath import VMATH, exp_fn, sigmoid_fn, tanh_fn

_NP = {"float32": "np.float32", "float64": "np.float64", "int64": "np.int64",
       "int32": "np.int32", "bool": "np.bool_"}
_NB = {"float32": "float32", "float64": "float64", "int64": "int64", "int32": "int32",
       "bool": "boolean"}


def _fn(name):
    return lambda r, t, x: f"{name}({x})"


def _exp(r, t, x):
    return f"{exp_fn(t, r.fastmath)}({x})"


def _sigmoid(r, t, x):
    return f"{sigmoid_fn(t, r.fastmath)}({x})"


def _tanh(r, t, x):
    return f"{tanh_fn(t, r.fastmath)}({x})"


def _gelu(r, t, x):
    one, half = r.literal(1.0, t), r.literal(0.5, t)
    return f"({half} * {x} * ({one} + math.erf({x} * {r.literal(1 / math.sqrt(2), t)})))"


def _gelu_tanh(r, t, x):
    c, k = r.literal(math.sqrt(2 / math.pi), t), r.literal(0.044715, t)
    if t == "float32" and not r.fastmath:
        # 0.5 x (1 + tanh(u)) = x sigmoid(2u): vmath's sigmoid vectorises, libm's tanh
        # does not (GPT-2's FFN epilogue, 512 x 3072: ~30 -> ~2 ms a call on one core)
        c2 = r.literal(2 * math.sqrt(2 / math.pi), t)
        return f"({x} * _sigmoid32({c2} * ({x} + {k} * {x} * {x} * {x})))"
    one, half = r.literal(1.0, t), r.literal(0.5, t)
    return f"({half} * {x} * ({one} + math.tanh({c} * ({x} + {k} * {x} * {x} * {x}))))"


def _infix(sym):
    return lambda r, t, a, b: f"({a} {sym} {b})"


# Python semantics are NumPy's for // and % (floor), comparisons and pow; bool logic is
# bitwise (no branch in a vectorised loop); max/min propagate NaN (vmath.py).
CODE_FOR_OP = {
    **{op: _infix(op) for op in ("+", "-", "*", "/", "//", "%", "<", ">", "<=", ">=",
                                  "==", "!=")},
    "pow": _infix("**"),
    "max": lambda r, t, a, b: f"_max({a}, {b})",
    "min": lambda r, t, a, b: f"_min({a}, {b})",
    "and": _infix("&"), "or": _infix("|"), "xor": _infix("^"),
    "exp": _exp, "sigmoid": _sigmoid, "gelu": _gelu, "gelu_tanh": _gelu_tanh,
    "tanh": _tanh,
    **{f: _fn(f"math.{f}") for f in ("log", "sqrt", "erf", "sin", "cos", "log1p",
                                     "expm1")},
    "rsqrt": lambda r, t, x: f"({r.literal(1.0, t)} / math.sqrt({x}))",
    "floor": _fn("np.floor"), "ceil": _fn("np.ceil"), "sign": _fn("np.sign"),
    "isnan": _fn("np.isnan"), "isinf": _fn("np.isinf"), "abs": _fn("abs"),
    "neg": lambda r, t, x: f"(-{x})",
    "not": lambda r, t, x: f"(not {x})",
}


class _Renderer(Renderer):
    """Numba's table and differences: Python syntax, NumPy scalar types."""
    code_for_op = CODE_FOR_OP
    language = "Numba"

    def __init__(self, kernel: L.Kernel, fastmath: bool = False):
        super().__init__(kernel)
        self.fastmath = fastmath
        self.split = split_loop(kernel)

    def literal(self, value, dtype: str) -> str:
        if dtype in ("int64", "int32"):
            # parenthesised when negative: ``-1 ** n`` is -(1 ** n) in Python
            return str(int(value)) if value >= 0 else f"({int(value)})"
        if dtype == "bool":
            return "True" if value else "False"
        if math.isinf(value):
            text = "np.inf" if value > 0 else "-np.inf"
        elif math.isnan(value):
            text = "np.nan"
        else:
            text = repr(float(value))
        return f"{_NP[dtype]}({text})"

    def load(self, buf: str, index) -> str:
        if self.ranks[buf] == 0:
            return f"{buf}[0]"
        return f"{buf}[{', '.join(self.expr(i) for i in index)}]"

    def cast(self, text: str, src: str, dst: str) -> str:
        return f"{_NP[dst]}({text})"

    def select(self, cond: str, a: str, b: str, dtype: str) -> str:
        return f"({a} if {cond} else {b})"

    def stmts(self, stmts, indent: str) -> list[str]:
        out = []
        for s in stmts:
            if isinstance(s, L.Loop):
                self.vars[s.var] = "int64"
                if s is self.split:
                    out.append(f"{indent}for {s.var} in range({RANGE_ARGS[0]}, "
                               f"{RANGE_ARGS[1]}):")
                else:
                    rng = "nb.prange" if s.parallel else "range"
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
            elif isinstance(s, L.Reduce):
                acc = L.Var(s.var)
                step = self.expr(L.Bin(s.op, acc, s.value))
                if self.typeof(L.Bin(s.op, acc, s.value)) != self.vars[s.var]:
                    step = f"{_NP[self.vars[s.var]]}({step})"
                out.append(f"{indent}{s.var} = {step}")
            else:
                raise TypeError(s)
        return out


PRELUDE = VMATH      # imports, _exp32 and the sigmoids

# Fast-math flags of every kernel unless fastmath=True asks for all of them: ``reassoc``
# lets reductions (row sums, rmsnorm's sum of squares) vectorise, ``contract`` makes
# fused multiply-adds; no flag assumes away NaN, infinities or signed zeros, so special
# values still propagate (rmsnorm over 512 x 1024 float32: 0.70 -> 0.2 ms).
DEFAULT_FLAGS = '{"contract", "reassoc"}'     # source text: a set's repr is not stable


# The range of the split loop (see the module's docstring): the function's last two
# parameters, named so that no buffer (in0.., out, acc) or size symbol can clash.
RANGE_ARGS = ("_graphc_lo", "_graphc_hi")


def split_loop(kernel: L.Kernel) -> L.Loop | None:
    """The loop the runtime splits over its threads: the kernel's body when that is one
    parallel loop with no parallel loop inside; None otherwise (the kernel runs as is)."""
    body = kernel.body
    if len(body) == 1 and isinstance(body[0], L.Loop) and body[0].parallel \
            and not any(isinstance(n, L.Loop) and n.parallel for n in L.walk(body[0].body)):
        return body[0]
    return None


def work(body, env: dict | None = None):
    """Statements executed by ``body`` with its loop extents evaluated for the sizes
    ``env`` (symbol -> int); None when an extent cannot be (symbolic without ``env``, or
    depending on an outer loop's variable)."""
    total = 0
    for s in body:
        if isinstance(s, L.Loop):
            if isinstance(s.extent, L.Const):
                n = int(s.extent.value)
            elif env is None:
                return None
            else:
                try:
                    n = int(L.evaluate(s.extent, env))
                except (KeyError, TypeError, ValueError):
                    return None
            inner = work(s.body, env)
            if inner is None:
                return None
            total += n * max(inner, 1)
        else:
            total += 1
    return total


def function_sizes(kernel: L.Kernel) -> list[str]:
    """The sizes the rendered function takes: all of the kernel's, except those only the
    split loop's extent uses (the runtime gives that loop's range). So one computation
    over a dynamic number of rows and over a static one (a model's prefill and its decode
    step, S rows and 1) renders to the same source: one module (see render_kernel)."""
    split = split_loop(kernel)
    if split is None:
        return list(kernel.sizes)
    used = {n.name for n in L.walk(split.body) if isinstance(n, L.Var)}
    return [s for s in kernel.sizes if s in used]


def signature(kernel: L.Kernel) -> str:
    args = []
    for b in kernel.buffers:
        dims = ", ".join([":"] * (max(b.rank, 1) - 1) + ["::1"])
        args.append(f"{_NB[b.dtype]}[{dims}]")
    args += ["int64"] * (len(function_sizes(kernel)) + (2 if split_loop(kernel) else 0))
    return f"void({', '.join(args)})"


def _comment(kernel: L.Kernel, split: L.Loop | None) -> str:
    """The kernel's pseudo-code as the module's comment: for a split kernel without its
    name and its split loop's extent (``lo..hi``), which are not in the function either,
    so kernels that compute alike share one module's source."""
    if split is None:
        text = L.format_kernel(kernel)
    else:
        sizes = function_sizes(kernel)
        head = L.format_kernel(L.Kernel("kernel", kernel.buffers, sizes, [])).splitlines()
        text = "\n".join(head + [f"  parallel for {split.var} in lo..hi:"]
                         + L.format_stmts(split.body, "    "))
    return "\n".join("# " + line for line in text.splitlines())


def render_kernel(kernel: L.Kernel, fastmath: bool = False) -> str:
    """Python source of one kernel module: the prelude and ``def kernel(...)``. NumPy's
    error model: a float division by zero gives inf or NaN (the mean of nothing is NaN),
    not Python's ZeroDivisionError."""
    r = _Renderer(kernel, fastmath)
    body = r.stmts(kernel.body, "    ")
    parallel = r.split is None and any(isinstance(n, L.Loop) and n.parallel
                                       for n in L.walk(kernel.body))
    params = [b.name for b in kernel.buffers] + function_sizes(kernel) + \
        (list(RANGE_ARGS) if r.split is not None else [])
    comment = _comment(kernel, r.split)
    flags = "True" if fastmath else DEFAULT_FLAGS
    return (f"{PRELUDE}\n{comment}\n"
            f"@nb.njit({signature(kernel)!r}, parallel={parallel}, fastmath={flags}, "
            f"error_model='numpy', cache=True, nogil=True, **_NOALIAS)\n"
            f"def kernel({', '.join(params)}):\n" + "\n".join(body or ["    pass"]) + "\n")
