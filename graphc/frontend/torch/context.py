"""Per-node helpers for translation functions: the node's arguments (FX nodes replaced by
their graphc values), torch dtypes as graphc dtypes, torch's symbolic sizes as graphc
symbolic dims."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ... import ops
from ...ir.dims import Sym
from ..tensor import Tensor
from .errors import NonPolynomialDimError, TorchImportError

_DTYPES = {"torch.float32": "float32", "torch.float64": "float64", "torch.int64": "int64",
           "torch.int32": "int32", "torch.bool": "bool", "torch.int16": "int32",
           "torch.int8": "int32", "torch.uint8": "int32"}


def graphc_dtype(dtype, what: str, loc=None) -> str:
    """The graphc dtype of a torch dtype (small ints widen to int32); half precision is an
    error: graphc computes in float32 / float64."""
    dt = _DTYPES.get(str(dtype))
    if dt is None:
        raise TorchImportError(f"{what} has dtype {dtype}; graphc computes in float32, "
                               f"float64, int32, int64 and bool (call model.float() for "
                               f"half-precision models)", loc=loc)
    return dt


def _range_of(symbols, sym):
    r = symbols.ranges.get(sym.name)
    if r is not None:
        return r
    env = symbols._shape_env
    vr = getattr(env, "var_to_range", {}).get(sym) if env is not None else None
    return None if vr is None else (vr.lower, vr.upper)


class Symbols:
    """torch's sympy size symbols -> graphc dims (one graphc symbol per torch symbol)."""

    def __init__(self, ranges: dict | None = None, aliases: dict | None = None):
        self.names: dict[str, str] = {}        # torch symbol name -> graphc symbol name
        self.aliases = dict(aliases or {})     # torch symbol name -> the one it equals
        self.ranges = dict(ranges or {})       # torch symbol name -> (lo, hi): Max / Min
        self._shape_env = None                 # torch's ShapeEnv, for ranges not given
        self.relied: set = set()               # torch symbols a Max / Min was decided by

    def root(self, torch_name: str) -> str:
        """The symbol ``torch_name`` was unified with (itself if none)."""
        return Symbols.root_in(self.aliases, torch_name)

    @staticmethod
    def root_in(aliases: dict, torch_name: str) -> str:
        seen = set()
        while torch_name in aliases and torch_name not in seen:
            seen.add(torch_name)
            torch_name = aliases[torch_name]
        return torch_name

    def name(self, torch_name: str, graphc_name: str) -> None:
        self.names.setdefault(self.root(torch_name), graphc_name)

    def dim(self, x, what: str = "a size"):
        """An int, a torch.SymInt or a sympy expression as an int or a graphc Sym."""
        if isinstance(x, (bool, np.bool_)):
            return bool(x)
        if isinstance(x, (int, np.integer)):
            return int(x)
        if isinstance(x, Sym):
            return x
        node = getattr(x, "node", None)
        expr = getattr(node, "expr", None) if node is not None else None
        if getattr(node, "shape_env", None) is not None:
            self._shape_env = node.shape_env
        if expr is None:
            expr = x
        return self._sympy(expr, what)

    def _sympy(self, e, what):
        import sympy
        if isinstance(e, sympy.Integer) or getattr(e, "is_Integer", False):
            return int(e)
        if isinstance(e, sympy.Symbol):
            tname = self.root(e.name)
            n = self.names.get(tname)
            if n is None:
                n = tname
                self.names[tname] = n
            return Sym.of(n)
        if isinstance(e, sympy.Add):
            out = 0
            for a in e.args:
                out = out + self._sympy(a, what)
            return out
        if isinstance(e, sympy.Mul):
            out = 1
            for a in e.args:
                out = out * self._sympy(a, what)
            return out
        if isinstance(e, sympy.Pow) and e.exp.is_Integer and int(e.exp) > 0:
            base, out = self._sympy(e.base, what), 1
            for _ in range(int(e.exp)):
                out = out * base
            return out
        if type(e).__name__ == "FloorDiv":
            num, den = self._sympy(e.args[0], what), self._sympy(e.args[1], what)
            try:
                return num // den
            except ValueError:
                raise NonPolynomialDimError(
                    f"{what} is floor(({num}) / {den}), which is no polynomial of the "
                    f"dynamic dims: graphc's symbolic dims divide exactly (a stride-{den} "
                    f"convolution or pooling over a dynamic length; make that dim static, "
                    f"or one that divides: Dim(..) * {den} + ..)") from None
        if type(e).__name__ in ("Max", "Min"):
            return self._sympy(self._decided(e, what), what)
        raise NonPolynomialDimError(
            f"{what} is the symbolic expression {e} ({type(e).__name__}); graphc's "
            f"symbolic dims are polynomials of the dynamic dims")

    def hint(self, torch_name: str):
        """The size torch traced a symbol with (dynamo's shape env), or None."""
        env = self._shape_env
        if env is None:
            return None
        values = getattr(env, "backed_var_to_val", None)    # torch >= 2.10's name
        if values is None:
            values = getattr(env, "var_to_val", {})
        for sym, val in values.items():
            if getattr(sym, "name", None) == torch_name:
                return int(val)
        return None

    def equal_pair(self, error):
        """(torch symbol, torch symbol it must equal) when a ShapeError's operands differ
        in a dim by exactly ``a - b`` of two symbols torch traced with the same size (each
        tensor of a kv cache gets its own symbol from dynamo, though attention needs the
        keys' and values' lengths equal: torch's kernels check that at run time), else
        None."""
        back = {g: t for t, g in self.names.items()}
        shapes = [tuple(t.shape) for t in (getattr(error, "shapes", None) or [])
                  if hasattr(t, "shape")]
        for i, sa in enumerate(shapes):
            for sb in shapes[i + 1:]:
                # the dims an op pairs: aligned from the right (broadcasting), the batch
                # dims of a matmul the same way, its contracted dims
                pairs = list(zip(reversed(sa), reversed(sb)))
                if len(sa) >= 2 and len(sb) >= 2:
                    pairs += list(zip(reversed(sa[:-2]), reversed(sb[:-2])))
                    pairs.append((sa[-1], sb[-2]))
                for a, b in pairs:
                    pair = self._pair(a, b, back)
                    if pair is not None:
                        return pair
        return None

    def _pair(self, a, b, back):
        if not (isinstance(a, Sym) and isinstance(b, Sym)):
            return None
        d = a - b
        if not isinstance(d, Sym) or len(d.terms) != 2:
            return None
        (m1, c1), (m2, c2) = d.terms
        if len(m1) != 1 or len(m2) != 1 or sorted((c1, c2)) != [-1, 1]:
            return None
        x, y = (back.get(m1[0]), back.get(m2[0]))
        if x is None or y is None:
            return None
        hx, hy = self.hint(x), self.hint(y)
        if hx is None or hx != hy:
            return None
        return (y, x) if c1 == 1 else (x, y)

    def _decided(self, e, what):
        """The argument of Max(...) / Min(...) that wins for every size in the dims'
        ranges (``max(0, cache - S)`` with S <= cache), else an error saying so."""
        from torch.utils._sympy.value_ranges import ValueRanges, bound_sympy
        ranges = {}
        for sym in e.free_symbols:
            r = _range_of(self, sym)
            if r is not None:
                ranges[sym] = ValueRanges(*r)
        is_max = type(e).__name__ == "Max"
        for a in e.args:
            def wins(b):
                if b is a:
                    return True
                bound = bound_sympy(a - b, ranges)
                return bool(bound.lower >= 0) if is_max else bool(bound.upper <= 0)
            if all(wins(b) for b in e.args):
                self.relied |= {sym.name for sym in ranges}
                return a
        raise TorchImportError(f"{what} is the symbolic expression {e}, whose value depends "
                               f"on which argument is larger for the sizes in the dims' "
                               f"ranges ({', '.join(f'{k}: {v.lower}..{v.upper}' for k, v in ranges.items()) or 'none known'}); "
                               f"graphc's symbolic dims are polynomials of the dynamic dims")


@dataclass
class NodeCtx:
    """One FX node being translated."""

    node: Any                      # torch.fx.Node
    op: str                        # "aten.add.Tensor"
    args: list
    kwargs: dict
    loc: Any
    symbols: Symbols
    builder: Any
    attrs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def val(self):
        """The node's fake value from export (a FakeTensor, a tuple of them, a SymInt)."""
        return self.node.meta.get("val")

    def arg(self, k: int, name: str | None = None, default=None):
        if k < len(self.args):
            return self.args[k]
        if name is not None and name in self.kwargs:
            return self.kwargs[name]
        return default

    def kw(self, name: str, default=None):
        return self.kwargs.get(name, default)

    def out_dtype(self, k: int | None = None) -> str:
        v = self.val
        if k is not None:
            v = v[k]
        if v is None or not hasattr(v, "dtype"):
            raise self.fail("has no tensor type recorded by torch.export")
        return graphc_dtype(v.dtype, f"the output of FX node {self.name!r}", self.loc)

    def out_shape(self, k: int | None = None) -> tuple:
        v = self.val if k is None else self.val[k]
        return tuple(self.symbols.dim(d, f"a dim of FX node {self.name!r}") for d in v.shape)

    def dim(self, x):
        return self.symbols.dim(x, f"an argument of FX node {self.name!r}")

    def tensor(self, x, dtype: str | None = None) -> Tensor:
        """``x`` as a graph tensor (a Python number becomes a 0-d constant of ``dtype``)."""
        if isinstance(x, Tensor):
            return x if dtype is None or x.dtype == dtype else ops.cast(x, dtype=dtype)
        if isinstance(x, Sym):
            t = ops.reshape(ops.arange(x, x + 1, dtype="int64"), shape=())
            return t if dtype in (None, "int64") else ops.cast(t, dtype=dtype)
        if isinstance(x, (bool, int, float, np.number, np.bool_)):
            dt = dtype or ("bool" if isinstance(x, bool) else
                           "int64" if isinstance(x, int) else "float32")
            return self.builder.wrap(self.builder.scalar(x, dt))
        raise self.fail(f"expected a tensor or a number, got {type(x).__name__}")

    def fail(self, message: str, cls=TorchImportError):
        return cls(f"FX node {self.name!r} ({self.op}): {message}", op=self.op,
                   node=self.name, loc=self.loc)
