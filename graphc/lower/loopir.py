"""The loop IR: what a fused group becomes before a backend renders it.

It knows nothing of Numba or CUDA: parallel and sequential loops, scalar assignments,
loads and stores with index expressions, arithmetic, math calls and selects. Sizes are
symbol names bound at run time. ``str(kernel)`` prints readable pseudo-code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

# -- expressions -----------------------------------------------------------------------


class Expr:
    pass


@dataclass(frozen=True)
class Const(Expr):
    value: float | int
    dtype: str            # "float32" | "float64" | "int64" | "bool"


@dataclass(frozen=True)
class Var(Expr):
    name: str             # a loop variable, a scalar temporary or a size symbol


@dataclass(frozen=True)
class Load(Expr):
    buf: str
    index: tuple[Expr, ...]


@dataclass(frozen=True)
class Bin(Expr):
    op: str               # one of BIN_OPS
    a: Expr
    b: Expr


@dataclass(frozen=True)
class Call(Expr):
    fn: str               # one of FUNCTIONS
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Select(Expr):
    cond: Expr
    a: Expr               # value when cond holds (only the chosen side is evaluated)
    b: Expr


@dataclass(frozen=True)
class Cast(Expr):
    a: Expr
    dtype: str


# -- statements ------------------------------------------------------------------------


class Stmt:
    pass


@dataclass
class Loop(Stmt):
    var: str
    extent: Expr
    body: list
    parallel: bool = False


@dataclass
class Assign(Stmt):
    var: str
    value: Expr
    dtype: str            # the scalar's type (accumulators are float64)


@dataclass
class Store(Stmt):
    buf: str
    index: tuple[Expr, ...]
    value: Expr


@dataclass
class Reduce(Stmt):
    """``var = var <op> value``: one step of a reduction into the scalar ``var``, which
    is assigned ``identity(op)`` before the loops it runs in. A renderer may split those
    loops (a GPU block shares them and combines partials); any other assignment inside a
    loop (a running sum of a scan, an argmax's running index) is sequential."""
    var: str
    op: str               # one of REDUCE_OPS
    value: Expr


# -- kernels ---------------------------------------------------------------------------


@dataclass
class BufferParam:
    name: str
    dtype: str
    rank: int
    role: str = "in"      # "in" | "out" | "inout"


@dataclass
class Kernel:
    name: str
    buffers: list[BufferParam]
    sizes: list[str]      # symbol names the kernel takes as int arguments
    body: list
    meta: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return format_kernel(self)


Node = Union[Expr, Stmt]

# -- helpers for building --------------------------------------------------------------


def c(v, dtype="int64") -> Const:
    return Const(v, dtype)


def add(a: Expr, b: Expr) -> Expr:
    if isinstance(b, Const) and b.value == 0:
        return a
    if isinstance(a, Const) and a.value == 0:
        return b
    if isinstance(a, Const) and isinstance(b, Const) and a.dtype == b.dtype == "int64":
        return Const(a.value + b.value, "int64")
    return Bin("+", a, b)


def mul(a: Expr, b: Expr) -> Expr:
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Const) and x.dtype == "int64":
            if x.value == 1:
                return y
            if x.value == 0:
                return Const(0, "int64")
    if isinstance(a, Const) and isinstance(b, Const) and a.dtype == b.dtype == "int64":
        return Const(a.value * b.value, "int64")
    return Bin("*", a, b)


def floordiv(a: Expr, b: Expr) -> Expr:
    if isinstance(b, Const) and b.value == 1:
        return a
    return Bin("//", a, b)


def mod(a: Expr, b: Expr) -> Expr:
    if isinstance(b, Const) and b.value == 1:
        return Const(0, "int64")
    return Bin("%", a, b)


# -- the vocabulary every renderer implements --------------------------------------------

# Binary operators. Arithmetic follows the promoted operand type (``//`` and ``%`` round
# towards minus infinity, as Python's and NumPy's do); comparisons and logic give bool.
ARITH_OPS = ("+", "-", "*", "/", "//", "%", "max", "min", "pow")
COMPARE_OPS = ("<", ">", "<=", ">=", "==", "!=")
LOGIC_OPS = ("and", "or", "xor")
BIN_OPS = ARITH_OPS + COMPARE_OPS + LOGIC_OPS
REDUCE_OPS = ("+", "max", "min")

# Math functions: name -> (arity, result type: "same" as the first argument, or "bool").
# Float functions take float32/float64; neg, abs and sign take any number; not takes bool.
FUNCTIONS = {
    "exp": (1, "same"), "log": (1, "same"), "sqrt": (1, "same"), "rsqrt": (1, "same"),
    "tanh": (1, "same"), "erf": (1, "same"), "sigmoid": (1, "same"), "sin": (1, "same"),
    "cos": (1, "same"), "floor": (1, "same"), "ceil": (1, "same"), "gelu": (1, "same"),
    "gelu_tanh": (1, "same"), "log1p": (1, "same"), "expm1": (1, "same"),
    "neg": (1, "same"), "abs": (1, "same"), "sign": (1, "same"),
    "isnan": (1, "bool"), "isinf": (1, "bool"), "not": (1, "bool"),
}


def call(fn: str, *args: Expr) -> Call:
    """``Call(fn, args)`` with its name and arity checked against FUNCTIONS."""
    if fn not in FUNCTIONS:
        raise ValueError(f"loop IR has no function {fn!r}; it has {', '.join(FUNCTIONS)}")
    if len(args) != FUNCTIONS[fn][0]:
        raise ValueError(f"loop-IR function {fn} takes {FUNCTIONS[fn][0]} arguments, "
                         f"got {len(args)}")
    return Call(fn, tuple(args))


def binary(op: str, a: Expr, b: Expr) -> Bin:
    if op not in BIN_OPS:
        raise ValueError(f"loop IR has no binary operator {op!r}; it has {', '.join(BIN_OPS)}")
    return Bin(op, a, b)


# -- types -----------------------------------------------------------------------------

_COMPARE = COMPARE_OPS + LOGIC_OPS


def promote(a: str, b: str) -> str:
    """The type of a binary operation on scalars of types a and b (NumPy's rules for
    the types the loop IR uses)."""
    if "float64" in (a, b):
        return "float64"
    if "float32" in (a, b):
        return "float32"
    if "int64" in (a, b):
        return "int64"
    return a


def type_of(e: Expr, buffers: dict, variables: dict) -> str:
    """The scalar type of ``e``; ``buffers`` maps buffer names to dtypes, ``variables``
    maps assigned scalars to theirs (loop variables and size symbols are int64)."""
    if isinstance(e, Const):
        return e.dtype
    if isinstance(e, Var):
        return variables.get(e.name, "int64")
    if isinstance(e, Load):
        return buffers[e.buf]
    if isinstance(e, Cast):
        return e.dtype
    if isinstance(e, Bin):
        if e.op in _COMPARE:
            return "bool"
        return promote(type_of(e.a, buffers, variables), type_of(e.b, buffers, variables))
    if isinstance(e, Call):
        if FUNCTIONS.get(e.fn, (1, "same"))[1] == "bool":
            return "bool"
        return type_of(e.args[0], buffers, variables)
    if isinstance(e, Select):
        return promote(type_of(e.a, buffers, variables), type_of(e.b, buffers, variables))
    raise TypeError(e)


def evaluate(e: Expr, env: dict):
    """The value of an integer index expression (sizes, extents) for ``env`` (name -> int):
    how a host computes a launch size from the symbol bindings."""
    if isinstance(e, Const):
        return e.value
    if isinstance(e, Var):
        return env[e.name]
    if isinstance(e, Bin):
        a, b = evaluate(e.a, env), evaluate(e.b, env)
        ops = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
               "//": lambda: a // b, "%": lambda: a % b, "max": lambda: max(a, b),
               "min": lambda: min(a, b)}
        if e.op in ops:
            return ops[e.op]()
    raise TypeError(f"not an integer index expression: {format_expr(e)}")


# -- printing --------------------------------------------------------------------------

_SHORT = {"float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32", "bool": "bool"}


def format_expr(e: Expr) -> str:
    if isinstance(e, Const):
        if e.dtype == "int64":
            return str(e.value)
        if e.dtype == "bool":
            return "true" if e.value else "false"
        return f"{e.value!r}{'f' if e.dtype == 'float32' else ''}"
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Load):
        return f"{e.buf}[{', '.join(format_expr(i) for i in e.index)}]"
    if isinstance(e, Bin):
        if e.op in ("max", "min", "pow"):
            return f"{e.op}({format_expr(e.a)}, {format_expr(e.b)})"
        return f"({format_expr(e.a)} {e.op} {format_expr(e.b)})"
    if isinstance(e, Call):
        return f"{e.fn}({', '.join(format_expr(a) for a in e.args)})"
    if isinstance(e, Select):
        return f"({format_expr(e.cond)} ? {format_expr(e.a)} : {format_expr(e.b)})"
    if isinstance(e, Cast):
        return f"{_SHORT.get(e.dtype, e.dtype)}({format_expr(e.a)})"
    raise TypeError(e)


def format_stmts(stmts, indent: str = "  ") -> list[str]:
    lines = []
    for s in stmts:
        if isinstance(s, Loop):
            kw = "parallel for" if s.parallel else "for"
            lines.append(f"{indent}{kw} {s.var} in 0..{format_expr(s.extent)}:")
            lines += format_stmts(s.body, indent + "  ")
        elif isinstance(s, Assign):
            lines.append(f"{indent}{s.var}: {_SHORT.get(s.dtype, s.dtype)} = "
                         f"{format_expr(s.value)}")
        elif isinstance(s, Store):
            idx = ", ".join(format_expr(i) for i in s.index)
            lines.append(f"{indent}{s.buf}[{idx}] = {format_expr(s.value)}")
        elif isinstance(s, Reduce):
            lines.append(f"{indent}{s.var} <{s.op}>= {format_expr(s.value)}")
        else:
            raise TypeError(s)
    return lines


def format_kernel(k: Kernel) -> str:
    params = ", ".join(f"{b.name}: {_SHORT.get(b.dtype, b.dtype)}[{b.rank}d]"
                       + ("" if b.role == "in" else f" ({b.role})") for b in k.buffers)
    sizes = f"; sizes {', '.join(k.sizes)}" if k.sizes else ""
    return "\n".join([f"kernel {k.name}({params}{sizes}):"] + format_stmts(k.body))


def rewrite(node, fn):
    """``node`` (an Expr, Stmt or list of them) rebuilt top-down: where ``fn(n)`` returns
    a node, it replaces ``n`` (and is not descended into); where it returns None, ``n``
    is rebuilt from its rewritten parts. A new tree; the original is left as it is."""
    def r(n):
        if isinstance(n, list):
            return [r(x) for x in n]
        out = fn(n)
        if out is not None:
            return out
        if isinstance(n, (Const, Var)):
            return n
        if isinstance(n, Load):
            return Load(n.buf, tuple(r(i) for i in n.index))
        if isinstance(n, Bin):
            return Bin(n.op, r(n.a), r(n.b))
        if isinstance(n, Call):
            return Call(n.fn, tuple(r(a) for a in n.args))
        if isinstance(n, Select):
            return Select(r(n.cond), r(n.a), r(n.b))
        if isinstance(n, Cast):
            return Cast(r(n.a), n.dtype)
        if isinstance(n, Loop):
            return Loop(n.var, r(n.extent), r(n.body), n.parallel)
        if isinstance(n, Assign):
            return Assign(n.var, r(n.value), n.dtype)
        if isinstance(n, Store):
            return Store(n.buf, tuple(r(i) for i in n.index), r(n.value))
        if isinstance(n, Reduce):
            return Reduce(n.var, n.op, r(n.value))
        raise TypeError(n)
    return r(node)


def rename_buffer(node, old: str, new: str):
    """``node`` (an Expr, Stmt or list of them) with every load and store of buffer
    ``old`` made one of ``new`` (a new tree; the original is left as it is)."""
    def fn(n):
        if isinstance(n, Load) and n.buf == old:
            return Load(new, tuple(rewrite(i, fn) for i in n.index))
        if isinstance(n, Store) and n.buf == old:
            return Store(new, tuple(rewrite(i, fn) for i in n.index), rewrite(n.value, fn))
        return None
    return rewrite(node, fn)


def walk(node):
    """Every expression and statement under ``node`` (a Stmt, Expr or list)."""
    if isinstance(node, list):
        for n in node:
            yield from walk(n)
        return
    yield node
    if isinstance(node, Loop):
        yield from walk(node.extent)
        yield from walk(node.body)
    elif isinstance(node, (Assign, Reduce)):
        yield from walk(node.value)
    elif isinstance(node, Store):
        for i in node.index:
            yield from walk(i)
        yield from walk(node.value)
    elif isinstance(node, Load):
        for i in node.index:
            yield from walk(i)
    elif isinstance(node, Bin):
        yield from walk(node.a)
        yield from walk(node.b)
    elif isinstance(node, Call):
        for a in node.args:
            yield from walk(a)
    elif isinstance(node, Select):
        yield from walk(node.cond)
        yield from walk(node.a)
        yield from walk(node.b)
    elif isinstance(node, Cast):
        yield from walk(node.a)
