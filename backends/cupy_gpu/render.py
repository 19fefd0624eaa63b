"""Render a loop-IR kernel as CUDA C (``extern "C" __global__``).

The loop IR says what is parallel; this module decides how it maps to the GPU:

* **map** kernels (a parallel loop whose body holds no reduction: elementwise groups, GEMM
  and attention epilogues): the parallel loop and the sequential loop inside it are
  flattened into one index space, one element per thread, a grid-stride loop over it;
* **row** kernels (a parallel loop whose body reduces: softmax, layernorm, rmsnorm, sums):
  one thread block per row (a grid-stride loop over rows). Each reduction loop is split
  across the block's threads, each thread keeps a partial in a register, and a block
  reduction (warp shuffles, then one shared-memory slot per warp) gives every thread the
  total. The loops that write the row are split across the threads the same way;
* a kernel with no parallel loop (a rank-0 result) is one row of a row kernel.

A loop that updates a scalar assigned before it with a plain assignment (a scan's running
total, not a ``Reduce``) is never split or flattened: in a map kernel the thread of its
row runs it in order; in a row kernel every thread of the block runs it in order and
thread 0 stores.

Every barrier and shuffle sits in block-uniform control flow (the loops over rows depend
on ``blockIdx`` only), which CUDA requires and the CPU emulation harness checks.

Buffers are C-contiguous; a buffer of rank r >= 2 gets its dims 1..r-1 as extra
``long long`` parameters (``<buf>_d1`` ...), for the index arithmetic. Size symbols follow
as ``long long``. Types: float32 -> float, float64 -> double, int64 -> long long,
int32 -> int, bool -> bool; the table :data:`CTYPES` is where float16/bfloat16
(``__half``/``__nv_bfloat16``, accumulating in float) would go.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from graphc.errors import BackendError
from graphc.lower import loopir as L
from graphc.lower.exprs import delinearize
from graphc.lower.kernels import identity
from graphc.lower.renderer import Renderer

CTYPES = {"float32": "float", "float64": "double", "int64": "long long", "int32": "int",
          "bool": "bool"}

BLOCK = 256          # threads per block of map and row kernels (any multiple of 32 works)

PRELUDE = r"""// graphc CUDA prelude: helpers every generated kernel may use.
#define GRAPHC_INF_F __int_as_float(0x7f800000)
#define GRAPHC_INF_D __longlong_as_double(0x7ff0000000000000LL)
#define GRAPHC_NAN_F __int_as_float(0x7fc00000)
#define GRAPHC_NAN_D __longlong_as_double(0x7ff8000000000000LL)

// NumPy's maximum/minimum: NaN propagates (fmaxf would drop it).
template <typename T> __device__ __forceinline__ T graphc_max(T a, T b) {
  return (a > b || a != a) ? a : b;
}
template <typename T> __device__ __forceinline__ T graphc_min(T a, T b) {
  return (a < b || a != a) ? a : b;
}
// Python's floor division and modulo on integers (C truncates towards zero).
__device__ __forceinline__ long long graphc_floordiv(long long a, long long b) {
  long long q = a / b;
  return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q;
}
__device__ __forceinline__ long long graphc_mod(long long a, long long b) {
  long long r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
// 1 / (1 + exp(-x)) without overflow, written as a select so it does not branch.
__device__ __forceinline__ float graphc_sigmoid(float x) {
  float e = expf(-fabsf(x));
  float s = 1.0f / (1.0f + e);
  return x >= 0.0f ? s : e * s;
}
__device__ __forceinline__ double graphc_sigmoid(double x) {
  double e = exp(-fabs(x));
  double s = 1.0 / (1.0 + e);
  return x >= 0.0 ? s : e * s;
}

// The power of integers every backend computes (torch's: a negative exponent gives the
// power truncated toward zero, 0 unless the base is +-1), isnan/isinf/sign without <cmath>.
__device__ __forceinline__ long long graphc_ipow(long long a, long long b) {
  if (b < 0) return a == 1 ? 1 : (a == -1 ? ((b & 1) ? -1 : 1) : 0);
  long long r = 1;
  while (b) { if (b & 1) r *= a; a *= a; b >>= 1; }
  return r;
}
template <typename T> __device__ __forceinline__ bool graphc_isnan(T x) { return x != x; }
// NumPy's float modulo: the result has the divisor's sign.
template <typename T> __device__ __forceinline__ T graphc_fmod(T a, T b) {
  T m = (T)fmod((double)a, (double)b);
  return (m != (T)0 && ((m < (T)0) != (b < (T)0))) ? m + b : m;
}
template <typename T> __device__ __forceinline__ bool graphc_isinf(T x) {
  return x - x != x - x && x == x;
}
template <typename T> __device__ __forceinline__ T graphc_sign(T x) {
  return x != x ? x : (T)((x > (T)0) - (x < (T)0));
}

struct graphc_sum_op {
  template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct graphc_max_op {
  template <typename T> __device__ __forceinline__ T operator()(T a, T b) const {
    return graphc_max(a, b);
  }
};
struct graphc_min_op {
  template <typename T> __device__ __forceinline__ T operator()(T a, T b) const {
    return graphc_min(a, b);
  }
};

// Reduction of one value per thread over the whole block; every thread gets the result.
// blockDim.x must be a multiple of 32. Called by all threads of the block (it has
// barriers). `ident` is the operation's identity (0 for sums, -inf for max).
template <typename T, typename Op>
__device__ T graphc_block_reduce(T v, T ident, Op op) {
  __shared__ T partial[32];
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();                      // the slots may still be read from the last call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  T r = lane < (int)(blockDim.x >> 5) ? partial[lane] : ident;
  for (int o = 16; o > 0; o >>= 1) r = op(r, __shfl_xor_sync(0xffffffffu, r, o));
  return r;
}
"""


@dataclass
class CudaKernel:
    """A rendered kernel and how to launch it."""
    name: str
    source: str
    kind: str                    # "map" | "row"
    work: L.Expr                 # elements (map) or rows (row): the grid is sized from it
    params: list                 # ("buf", BufferParam) | ("dim", buffer, k) | ("size", name)
    block: int = BLOCK


def _literal(value, dtype: str) -> str:
    if dtype in ("int64", "int32"):
        if int(value) == -2**63:       # 9223372036854775808LL itself does not fit
            return "(-9223372036854775807LL - 1)"
        return f"{int(value)}LL" if dtype == "int64" else str(int(value))
    if dtype == "bool":
        return "true" if value else "false"
    v = float(value)
    f = dtype == "float32"
    if math.isnan(v):
        return "GRAPHC_NAN_F" if f else "GRAPHC_NAN_D"
    if math.isinf(v):
        inf = "GRAPHC_INF_F" if f else "GRAPHC_INF_D"
        return inf if v > 0 else f"(-{inf})"
    if dtype not in ("float32", "float64"):
        raise BackendError(f"cupy backend: no CUDA type for constant of dtype {dtype}")
    text = repr(v)
    return f"{text}f" if f else text


def _float_fn(f32: str, f64: str):
    def render(r, t, *args):
        if t not in ("float32", "float64"):
            raise BackendError(f"kernel {r.k.name}: {f32}() of {t}")
        return f"{f32 if t == 'float32' else f64}({', '.join(args)})"
    return render


def _infix(sym):
    return lambda r, t, a, b: f"({a} {sym} {b})"


def _minmax(name):
    def render(r, t, a, b):
        ct = CTYPES[t]
        return f"graphc_{name}<{ct}>(({ct})({a}), ({ct})({b}))"
    return render


def _gelu(r, t, x):
    one, half = _literal(1.0, t), _literal(0.5, t)
    erf = "erff" if t == "float32" else "erf"
    return f"({half} * {x} * ({one} + {erf}({x} * {_literal(1 / math.sqrt(2), t)})))"


def _gelu_tanh(r, t, x):
    one, half = _literal(1.0, t), _literal(0.5, t)
    tanh = "tanhf" if t == "float32" else "tanh"
    c, k = _literal(math.sqrt(2 / math.pi), t), _literal(0.044715, t)
    return f"({half} * {x} * ({one} + {tanh}({c} * ({x} + {k} * {x} * {x} * {x}))))"


def _pow(r, t, a, b):
    if t.startswith("int"):
        return f"(({CTYPES[t]})graphc_ipow({a}, {b}))"
    return _float_fn("powf", "pow")(r, t, a, b)


def _abs(r, t, x):
    if t.startswith("int"):
        return f"(({x}) < 0 ? -({x}) : ({x}))"
    return _float_fn("fabsf", "fabs")(r, t, x)


# C's integer / and % truncate towards zero: floor division and modulo of data that may
# be negative go through graphc_floordiv / graphc_mod (see CudaRenderer.op); bool logic is
# C's; max/min propagate NaN (the prelude).
CODE_FOR_OP = {
    **{op: _infix(op) for op in ("+", "-", "*", "/", "%", "<", ">", "<=", ">=", "==",
                                  "!=")},
    "//": lambda r, t, a, b: (f"({a} / {b})" if t.startswith("int") else
                              f"{'floorf' if t == 'float32' else 'floor'}({a} / {b})"),
    "pow": _pow, "max": _minmax("max"), "min": _minmax("min"),
    "and": _infix("&&"), "or": _infix("||"), "xor": _infix("!="),
    **{f: _float_fn(f + "f", f) for f in ("exp", "log", "sqrt", "rsqrt", "tanh", "erf",
                                          "sin", "cos", "floor", "ceil", "log1p",
                                          "expm1")},
    "sigmoid": lambda r, t, x: f"graphc_sigmoid({x})",
    "gelu": _gelu, "gelu_tanh": _gelu_tanh, "abs": _abs,
    "neg": lambda r, t, x: f"(-{x})",
    "sign": lambda r, t, x: f"graphc_sign<{CTYPES[t]}>({x})",
    "isnan": lambda r, t, x: f"graphc_isnan<{CTYPES[t]}>({x})",
    "isinf": lambda r, t, x: f"graphc_isinf<{CTYPES[t]}>({x})",
    "not": lambda r, t, x: f"(!{x})",
}

_REDUCE_FN = {"+": "graphc_sum_op", "max": "graphc_max_op", "min": "graphc_min_op"}


def _reductions(stmts, assigned: set) -> list[tuple[str, str]]:
    """(var, op) of the Reduce statements in ``stmts`` (recursively) into scalars
    assigned before the loop (``assigned``)."""
    out = []
    for n in L.walk(stmts):
        if isinstance(n, L.Reduce) and n.var in assigned and (n.var, n.op) not in out:
            out.append((n.var, n.op))
    return out


def _has_reduction(stmts) -> bool:
    return any(isinstance(n, L.Reduce) for n in L.walk(stmts))


def _carries(loop: L.Loop, assigned: set) -> bool:
    """Whether ``loop`` updates, with a plain assignment, a scalar assigned before it (a
    scan's running total): its iterations depend on each other, so one thread runs them
    in order (loopir.Reduce: only a Reduce may be split)."""
    return any(isinstance(n, L.Assign) and n.var in assigned for n in L.walk(loop.body))


class _Renderer(Renderer):
    """CUDA C's table and differences: C types and casts, flat indexing with the
    buffers' dims, and the map / row thread mappings of the statements."""
    code_for_op = CODE_FOR_OP
    language = "CUDA"

    def __init__(self, kernel: L.Kernel):
        super().__init__(kernel)
        self.vars = {}
        for n in L.walk(kernel.body):
            if isinstance(n, L.Assign):
                old = self.vars.setdefault(n.var, n.dtype)
                if old != n.dtype:
                    raise BackendError(f"kernel {kernel.name}: scalar {n.var} is assigned "
                                       f"as {old} and as {n.dtype}")
        self.fresh = 0
        self.one_writer = False     # stores guarded to thread 0 (a block's sequential loop)

    # -- expressions -------------------------------------------------------------------
    def literal(self, value, dtype: str) -> str:
        return _literal(value, dtype)

    def index(self, buf: str, idx) -> str:
        if self.ranks[buf] == 0:
            return "0"
        text = self.expr(idx[0])
        for k, i in enumerate(idx[1:], start=1):
            text = f"({text}) * {buf}_d{k} + {self.expr(i)}"
        return text

    def load(self, buf: str, index) -> str:
        return f"{buf}[{self.index(buf, index)}]"

    def cast(self, text: str, src: str, dst: str) -> str:
        if dst == "bool":
            return f"(({text}) != 0)"
        return f"(({CTYPES[dst]})({text}))"

    def select(self, cond: str, a: str, b: str, dtype: str) -> str:
        t = CTYPES[dtype]
        return f"({cond} ? ({t})({a}) : ({t})({b}))"

    def expr(self, e: L.Expr) -> str:
        if (isinstance(e, L.Bin) and e.op in ("//", "%")
                and L.promote(self.typeof(e.a), self.typeof(e.b)).startswith("int")
                and any(isinstance(n, L.Load) for n in L.walk(e))):
            # data may be negative: Python's rounding (indices are never negative)
            a, b = self.expr(e.a), self.expr(e.b)
            return f"graphc_{'floordiv' if e.op == '//' else 'mod'}({a}, {b})"
        if (isinstance(e, L.Bin) and e.op == "%"
                and not L.promote(self.typeof(e.a), self.typeof(e.b)).startswith("int")):
            t = CTYPES[L.promote(self.typeof(e.a), self.typeof(e.b))]
            return f"graphc_fmod<{t}>(({t})({self.expr(e.a)}), ({t})({self.expr(e.b)}))"
        return super().expr(e)

    # -- statements ----------------------------------------------------------------------
    def simple(self, s, ind: str) -> list[str]:
        if isinstance(s, L.Assign):
            text = self.expr(s.value)
            if self.typeof(s.value) != s.dtype:
                text = f"({CTYPES[s.dtype]})({text})"
            return [f"{ind}{s.var} = {text};"]
        if isinstance(s, L.Store):
            t = CTYPES[self.types[s.buf]]
            # In a sequential loop every thread of the block computes the same values;
            # one of them stores.
            guard = "if (threadIdx.x == 0) " if self.one_writer else ""
            return [f"{ind}{guard}{s.buf}[{self.index(s.buf, s.index)}] = "
                    f"({t})({self.expr(s.value)});"]
        if isinstance(s, L.Reduce):
            t = self.vars[s.var]
            step = self.expr(L.Bin(s.op, L.Var(s.var), s.value))
            return [f"{ind}{s.var} = ({CTYPES[t]})({step});"]
        raise TypeError(s)

    def seq(self, stmts, ind: str) -> list[str]:
        """Statements run by one thread as written."""
        out = []
        for s in stmts:
            if isinstance(s, L.Loop):
                out.append(f"{ind}for (long long {s.var} = 0; {s.var} < {self.expr(s.extent)};"
                           f" ++{s.var}) {{")
                out += self.seq(s.body, ind + "  ")
                out.append(f"{ind}}}")
            else:
                out += self.simple(s, ind)
        return out

    def _flat(self, loops):
        """Perfectly nested loops -> (extent expr, decode statements, innermost body)."""
        extent: L.Expr = L.c(1)
        names, exts = [], []
        body = loops
        while len(body) == 1 and isinstance(body[0], L.Loop):
            lp = body[0]
            names.append(lp.var)
            exts.append(lp.extent)
            extent = L.mul(extent, lp.extent)
            body = lp.body
        for e in exts:
            if any(isinstance(n, L.Var) and n.name in names for n in L.walk(e)):
                raise BackendError(f"kernel {self.k.name}: a loop extent depends on an "
                                   "enclosing loop of the same nest")
        return names, exts, extent, body

    def decode(self, flat: str, names, exts, ind: str) -> list[str]:
        """The loop variables ``names`` (extents ``exts``, outermost first) from the flat
        index ``flat`` of their nest."""
        return [f"{ind}const long long {n} = {self.expr(e)};"
                for n, e in zip(names, delinearize(L.Var(flat), exts))]

    def block_strided(self, loop: L.Loop, ind: str, assigned: set) -> list[str]:
        """A sequential loop (nest) split across the block's threads; accumulations into
        scalars assigned before it become per-thread partials and a block reduction."""
        names, exts, extent, body = self._flat([loop])
        self.fresh += 1
        f = f"f{self.fresh}"
        out = [f"{ind}for (long long {f} = threadIdx.x; {f} < {self.expr(extent)}; "
               f"{f} += blockDim.x) {{"]
        out += self.decode(f, names, exts, ind + "  ")
        if any(isinstance(s, L.Loop) for s in body):
            raise BackendError(f"kernel {self.k.name}: a loop inside a block-strided loop "
                               "body is not supported by the CUDA renderer")
        for s in body:
            out += self.simple(s, ind + "  ")
        out.append(f"{ind}}}")
        for var, op in _reductions(body, assigned):
            t = CTYPES[self.vars[var]]
            ident = _literal(identity(op, self.vars[var]), self.vars[var])
            fn = _REDUCE_FN[op]
            out.append(f"{ind}{var} = graphc_block_reduce<{t}>({var}, ({t})({ident}), {fn}());")
        return out

    def block_program(self, stmts, ind: str) -> list[str]:
        """Statements that one block runs together (the body of a row)."""
        out, assigned = [], set()
        for s in stmts:
            if isinstance(s, L.Loop) and _carries(s, assigned):
                # a scan: every thread runs it in order (the scalars it carries stay
                # uniform across the block), thread 0 stores
                self.one_writer = True
                out += self.seq([s], ind)
                self.one_writer = False
                assigned |= {n.var for n in L.walk(s.body) if isinstance(n, L.Assign)}
            elif isinstance(s, L.Loop):
                accs = _reductions(s.body, assigned)
                for var, op in accs:
                    init = next((x for x in reversed(stmts[:stmts.index(s)])
                                 if isinstance(x, L.Assign) and x.var == var), None)
                    want = identity(op, self.vars[var])
                    if not (init and isinstance(init.value, L.Const)
                            and init.value.value == want):
                        raise BackendError(f"kernel {self.k.name}: accumulator {var} must "
                                           f"start at the identity of {op!r}")
                out += self.block_strided(s, ind, assigned)
            else:
                out += self.simple(s, ind)
                if isinstance(s, L.Assign):
                    assigned.add(s.var)
        return out

    # -- the kernel ----------------------------------------------------------------------
    def render(self) -> CudaKernel:
        k = self.k
        params, decl = [], []
        for b in k.buffers:
            const = "const " if b.role == "in" else ""
            decl.append(f"{const}{CTYPES[b.dtype]}* {b.name}")
            params.append(("buf", b))
        for b in k.buffers:
            for d in range(1, b.rank):
                decl.append(f"long long {b.name}_d{d}")
                params.append(("dim", b.name, d))
        for s in k.sizes:
            decl.append(f"long long {s}")
            params.append(("size", s))
        body = k.body
        par = [s for s in body if isinstance(s, L.Loop) and s.parallel]
        loop_vars = {n.var for n in L.walk(body) if isinstance(n, L.Loop)}
        lines = []
        hoisted = {v: t for v, t in self.vars.items() if v not in loop_vars}
        for v, t in sorted(hoisted.items()):
            lines.append(f"  {CTYPES[t]} {v};")
        if len(par) == 1 and len(body) == 1 and not _has_reduction(par[0].body):
            kind = "map"
            names, exts, work, inner = self._flat_map(par[0])
            lines.append(f"  const long long n_work = {self.expr(work)};")
            lines.append("  for (long long t = blockIdx.x * (long long)blockDim.x + "
                         "threadIdx.x; t < n_work; t += (long long)gridDim.x * blockDim.x) {")
            lines += self.decode("t", names, exts, "    ")
            lines += self.seq(inner, "    ")
            lines.append("  }")
        elif len(par) == 1 and len(body) == 1:
            kind = "row"
            lp = par[0]
            work = lp.extent
            lines.append(f"  for (long long {lp.var} = blockIdx.x; {lp.var} < "
                         f"{self.expr(lp.extent)}; {lp.var} += gridDim.x) {{")
            lines += self.block_program(lp.body, "    ")
            lines.append("  }")
        elif not par:
            kind = "row"
            work = L.c(1)
            lines.append("  if (blockIdx.x == 0) {")
            lines += self.block_program(body, "    ")
            lines.append("  }")
        else:
            raise BackendError(f"kernel {k.name}: the CUDA renderer expects one parallel "
                               "loop at the top of a kernel")
        comment = "\n".join("// " + line for line in L.format_kernel(k).splitlines())
        src = (f"{comment}\nextern \"C\" __global__ void {k.name}({', '.join(decl)}) {{\n"
               + "\n".join(lines) + "\n}\n")
        return CudaKernel(k.name, src, kind, work, params)

    def _flat_map(self, lp: L.Loop):
        """The parallel loop of a map kernel with the sequential loop directly inside it
        (after its index decoding) folded into one index space."""
        body = lp.body
        loops = [s for s in body if isinstance(s, L.Loop)]
        if (len(loops) == 1 and body[-1] is loops[0] and all(
                isinstance(s, L.Assign) for s in body[:-1])
                and not any(isinstance(s, L.Loop) for s in loops[0].body)
                and not any(isinstance(n, L.Var) and n.name in {a.var for a in body[:-1]}
                            for n in L.walk(loops[0].extent))
                and not _carries(loops[0], {a.var for a in body[:-1]})):
            inner = loops[0]
            return ([lp.var, inner.var], [lp.extent, inner.extent],
                    L.mul(lp.extent, inner.extent), body[:-1] + inner.body)
        return [lp.var], [lp.extent], lp.extent, body


def render_kernel(kernel: L.Kernel) -> CudaKernel:
    """The CUDA C of one loop-IR kernel (without the prelude: see :func:`module_source`)."""
    return _Renderer(kernel).render()


def module_source(kernels) -> str:
    """One translation unit: the prelude and the given kernels' sources (CudaKernel or
    template source strings)."""
    parts = [PRELUDE]
    for k in kernels:
        parts.append(k.source if isinstance(k, CudaKernel) else k)
    return "\n".join(parts)
