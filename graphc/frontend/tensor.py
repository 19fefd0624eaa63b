"""The Tensor proxy a traced function computes with.

Operators follow NumPy: ``@``, ``+ - * / // **`` with broadcasting, unary ``-`` and
``abs()``; ``== != < <= > >=`` give bool tensors; ``& | ^ ~`` are logical ops on bool
tensors. A bool operand of an arithmetic operator or a comparison takes the other
operand's dtype (``x * (ids == 0)``), as NumPy and torch do, and two bools give a bool
(``+`` is or, ``*`` is and; ``-`` is an error). A number (Python's or NumPy's) takes the
tensor's dtype; an int tensor meets a float one only through an explicit cast, so a float
number in arithmetic on an int tensor is a trace error (never truncated), while a
comparison compares the values (``ids < 0.5``) as NumPy does.

Methods: NumPy's (``.T``, ``.reshape`` with -1, also over symbolic dims, ``.transpose``,
``.astype``, ``.sum/.mean/.max/.min(axis, keepdims)``, ``[]`` slicing, ``.shape``,
``.dtype``) and torch's (``permute``, ``view``, ``unsqueeze``, ``squeeze``, ``expand``,
``flatten``, ``size``, ``dim``, ``t``, ``mT``, ``masked_fill``, ``softmax(dim)``,
``sum/mean/max/min/argmax(dim=, keepdim=)``, ``cumsum``, ``repeat_interleave``, ``to``,
``float/double/long/int/bool``, ``contiguous``, and the math functions as methods).

A NumPy function or ufunc applied to a traced tensor (``np.tanh(t)``), ``np.asarray(t)``,
``bool(t)``, ``int(t)`` and ``float(t)`` are trace errors naming the user's line and what
to write instead (``graphc.tanh(t)``); an ndarray on the left of an operator works.
"""
from __future__ import annotations

import sys
import numpy as np

from ..errors import TraceError
from ..ir.node import SourceLoc, _is_internal


def _F():
    from .. import ops
    return ops


def _user_loc():
    """The user's line: the first frame outside graphc and NumPy (a NumPy function that
    dispatched to a Tensor is not the place to report)."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (_is_internal(module) or module == "numpy" or module.startswith("numpy.")):
            return SourceLoc(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return None


def _lazy(name: str, what: str):
    """``graphc.<name>``, looked up when called (some ops are added by other modules)."""
    import graphc
    fn = getattr(graphc, name, None)
    if fn is None:
        fn = getattr(_F(), name, None)
    if fn is None:
        raise TraceError(f"{what} needs graphc.{name}, which this graphc does not have",
                         loc=_user_loc())
    return fn


def _is_py_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_)))


def _is_operand(v) -> bool:
    """Whether an operator takes ``v`` as its other operand (else NotImplemented)."""
    from ..ir.dims import Sym
    if isinstance(v, Sym):
        raise TraceError(f"the symbolic size {v} used as a tensor value: sizes are symbolic "
                         "at trace time and have no value to compute with; trace with a "
                         "static size, or pass the value as an input", loc=_user_loc())
    return isinstance(v, (Tensor, np.ndarray, bool, int, float, np.number, np.bool_,
                          list, tuple))


def _dtype_of(v):
    """The dtype an operand brings: a Tensor's or an ndarray's; None for a Python number
    (which takes the other operand's)."""
    if isinstance(v, Tensor):
        return v.dtype
    if isinstance(v, np.ndarray):
        from ..ir.types import normalize_dtype
        try:
            return normalize_dtype(v.dtype)
        except ValueError:
            return None
    return None


def _promote_bool(a, b):
    """NumPy's rule for a bool operand of arithmetic or a comparison: it takes the other
    operand's dtype (a Python int makes it int64, a Python float float32)."""
    da, db = _dtype_of(a), _dtype_of(b)

    def target(other, d_other):
        if d_other is not None:
            return None if d_other == "bool" else d_other
        if _is_number(other):
            return "float32" if isinstance(other, (float, np.floating)) else "int64"
        return None

    if da == "bool":
        t = target(b, db)
        if t is not None:
            a = _to(a, t)
    elif db == "bool":
        t = target(a, da)
        if t is not None:
            b = _to(b, t)
    return a, b


def _to(v, dtype):
    if isinstance(v, Tensor):
        return _F().cast(v, dtype=dtype)
    return np.asarray(v, dtype=np.dtype(dtype))


def _is_bool(v) -> bool:
    return isinstance(v, (bool, np.bool_)) or _dtype_of(v) == "bool"


def _is_float_number(v) -> bool:
    return isinstance(v, (float, np.floating))


def _int_fits(v, dtype) -> bool:
    info = np.iinfo(dtype)
    return info.min <= int(v) <= info.max


_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}


def _check_number(a, b, op):
    """A number operand of arithmetic on an integer tensor: a float one would be
    truncated to the tensor's dtype (NumPy gives floats), an int out of the dtype's range
    would wrap (NumPy raises): trace errors, never a silently different number."""
    t, v = (a, b) if isinstance(a, Tensor) else (b, a)
    if not isinstance(t, Tensor) or not t.dtype.startswith("int") or not _is_number(v):
        return
    sym = _SYMBOL.get(op, op)
    if _is_float_number(v):
        raise TraceError(f"'{sym}' of a {t.dtype} tensor and the float {v!r}: NumPy gives "
                         f"floats, graphc does not truncate the number; cast first "
                         f"(x.astype('float32') {sym} {v!r})", loc=_user_loc())
    if not _int_fits(v, t.dtype):
        raise TraceError(f"'{sym}' of a {t.dtype} tensor and {v!r}, which does not fit in "
                         f"{t.dtype}; cast first (x.astype('int64'))", loc=_user_loc())


def _bool_arith(a, b, op):
    """Arithmetic of two bools as NumPy and torch do it: + is or, * is and."""
    if op == "add":
        return _F().logical_or(a, b)
    if op == "mul":
        return _F().logical_and(a, b)
    hint = " use ^ (logical_xor) for bools that differ" if op == "sub" else ""
    raise TraceError(f"'{_SYMBOL.get(op, op)}' of two bools is not supported (NumPy and "
                     f"torch refuse it or change the dtype);{hint or ' cast first'} "
                     "(x.astype('int64'))", loc=_user_loc())


def _torch_dtype(dtype):
    """``torch.float32`` (without importing torch) and NumPy / string dtypes."""
    if type(dtype).__module__ == "torch" or str(dtype).startswith("torch."):
        return str(dtype).split(".", 1)[1]
    return dtype


def _norm_dim(d, rank: int, what: str, extra: int = 0) -> int:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
        raise TraceError(f"{what}: dim must be an int, got {d!r}", loc=_user_loc())
    n = rank + extra
    if not -n <= d < n:
        raise TraceError(f"{what}: dim {d} is out of range for a rank-{rank} tensor "
                         f"(expected {-n}..{n - 1})", loc=_user_loc())
    return int(d) % n if n else 0


def _dims_arg(dims, what):
    """``f(1, 2)``, ``f((1, 2))`` and ``f([1, 2])`` alike."""
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        return tuple(dims[0])
    return tuple(dims)


def _axis_kw(axis, dim, keepdims, keepdim, what):
    """NumPy's axis=/keepdims= or torch's dim=/keepdim= (not both)."""
    if dim is not None:
        if axis is not None:
            raise TraceError(f"{what}: give axis= or dim=, not both", loc=_user_loc())
        axis = dim
    if keepdim is not None:
        keepdims = keepdim
    if isinstance(axis, list):
        axis = tuple(axis)
    return axis, bool(keepdims)


class _LazyMinMax:
    """``x.max(dim=d)``: ``.values`` / ``.indices`` / ``values, indices = ...`` / ``[k]``
    as torch's named tuple; the argmax node is traced only when the indices are used."""

    def __init__(self, values, indices_fn):
        self.values = values
        self._indices_fn = indices_fn
        self._indices = None

    @property
    def indices(self):
        if self._indices is None:
            self._indices = self._indices_fn()
        return self._indices

    def __iter__(self):
        return iter((self.values, self.indices))

    def __len__(self):
        return 2

    def __getitem__(self, k):
        if isinstance(k, int) and k in (0, -2):
            return self.values
        return (self.values, self.indices)[k]

    def __repr__(self):
        return f"(values={self.values!r}, indices=...)"


# NumPy ufunc -> the graphc op that computes it (for the error that says what to write).
_NP_TO_GRAPHC = {
    "absolute": "abs", "fabs": "abs", "negative": "neg", "power": "pow",
    "float_power": "pow", "true_divide": "div", "divide": "div", "subtract": "sub",
    "multiply": "mul", "fmax": "maximum", "fmin": "minimum", "amax": "max",
    "amin": "min", "concatenate": "concat", "dot": "matmul", "expand_dims": "unsqueeze",
    "swapaxes": "transpose", "clamp": "clip", "stack": "concat",
}

# The ufuncs an ndarray's operators call when a Tensor is the other operand
# (``arr + t`` is ``np.add(arr, t)``): Tensor methods, forward and reflected.
_OPERATOR_UFUNCS = {
    "add": ("__add__", "__radd__"), "subtract": ("__sub__", "__rsub__"),
    "multiply": ("__mul__", "__rmul__"), "true_divide": ("__truediv__", "__rtruediv__"),
    "divide": ("__truediv__", "__rtruediv__"),
    "floor_divide": ("__floordiv__", "__rfloordiv__"), "power": ("__pow__", "__rpow__"),
    "matmul": ("__matmul__", "__rmatmul__"),
    "less": ("__lt__", "__gt__"), "less_equal": ("__le__", "__ge__"),
    "greater": ("__gt__", "__lt__"), "greater_equal": ("__ge__", "__le__"),
    "equal": ("__eq__", "__eq__"), "not_equal": ("__ne__", "__ne__"),
    "bitwise_and": ("__and__", "__rand__"), "bitwise_or": ("__or__", "__ror__"),
    "bitwise_xor": ("__xor__", "__rxor__"),
}


def _instead(np_name: str) -> str:
    import graphc
    if np_name.startswith("bitwise_") or np_name == "invert":
        # graphc's & | ^ ~ are logical, on bool tensors only: not a bitwise replacement
        return ("graphc has no bitwise ops on integers; on bool tensors write & | ^ ~ "
                "(logical ops)")
    name = _NP_TO_GRAPHC.get(np_name, np_name)
    if getattr(graphc, name, None) is not None:
        return f"write graphc.{name}(...) instead of np.{np_name}(...)"
    return (f"graphc has no {np_name}; write it with graphc's ops (`graphc ops` lists "
            "them)")


class Tensor:
    def __init__(self, builder, node_id: int):
        self.builder = builder
        self.id = node_id

    # Defining __eq__ would drop the default hash: tensors stay hashable by identity.
    __hash__ = object.__hash__

    # -- metadata -----------------------------------------------------------------------
    @property
    def node(self):
        return self.builder.graph.nodes[self.id]

    @property
    def type(self):
        return self.node.type

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return self.type.rank

    def dim(self) -> int:
        return self.type.rank

    def size(self, d=None):
        """torch's ``x.size()`` (the shape) and ``x.size(d)`` (one dim)."""
        if d is None:
            return self.shape
        return self.shape[_norm_dim(d, self.ndim, "size()")]

    def numel(self):
        from ..ir.dims import prod
        return prod(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TraceError("len() of a 0-d tensor", loc=_user_loc())
        d = self.shape[0]
        if not isinstance(d, int):
            raise TraceError(f"len() of a tensor whose first dim is symbolic ({d}); "
                             "use .shape[0]", loc=_user_loc())
        return d

    def __bool__(self):
        raise TraceError("a traced tensor has no truth value: Python control flow (if, "
                         "while, and/or/not, a comparison in an if) cannot depend on tensor "
                         "data; choose values elementwise with graphc.where(cond, a, b). "
                         "(`t in items` compares with ==, which gives a tensor: test "
                         "identity with any(t is u for u in items).)", loc=_user_loc())

    def _no_value(self, what):
        raise TraceError(f"{what} of a traced tensor: its values exist only when the graph "
                         "runs; keep computing with graphc ops (graphc.where for choices, "
                         ".astype for dtypes)", loc=_user_loc())

    def __int__(self):
        self._no_value("int()")

    def __float__(self):
        self._no_value("float()")

    def __array__(self, dtype=None, copy=None):
        self._no_value("np.asarray() / np.array()")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__
        if method == "__call__" and not kwargs and len(inputs) == 2 \
                and name in _OPERATOR_UFUNCS:
            # ``ndarray <op> Tensor``: the Tensor's (reflected) operator.
            fwd, rev = _OPERATOR_UFUNCS[name]
            a, b = inputs
            out = getattr(a, fwd)(b) if isinstance(a, Tensor) else getattr(b, rev)(a)
            if out is NotImplemented:
                raise TraceError(f"np.{name}() of a traced tensor and "
                                 f"{type(a if isinstance(b, Tensor) else b).__name__}",
                                 loc=_user_loc())
            return out
        if method != "__call__":
            raise TraceError(f"np.{name}.{method}() on a traced tensor: NumPy cannot "
                             "compute values that exist only when the graph runs; use "
                             "graphc's ops (graphc.sum / graphc.max for reductions)",
                             loc=_user_loc())
        raise TraceError(f"np.{name}() on a traced tensor: NumPy cannot compute values "
                         f"that exist only when the graph runs; {_instead(name)}",
                         loc=_user_loc())

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        if name == "transpose":
            return _F().transpose(*args, **kwargs)
        if name == "reshape":
            shape = args[1] if len(args) > 1 else kwargs.get("shape", kwargs.get("newshape"))
            return args[0].reshape(shape)
        if name == "shape":
            return args[0].shape
        if name == "ndim":
            return args[0].ndim
        raise TraceError(f"np.{name}() on a traced tensor: NumPy cannot compute values "
                         f"that exist only when the graph runs; {_instead(name)}",
                         loc=_user_loc())

    def __iter__(self):
        raise TraceError("cannot iterate over a traced tensor; use slicing or graphc.split",
                         loc=_user_loc())

    def __repr__(self) -> str:
        return f"Tensor(%{self.id}: {self.type})"

    # -- arithmetic ---------------------------------------------------------------------
    def _arith(self, other, op: str, reflected: bool = False):
        if not _is_operand(other):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        a, b = _promote_bool(a, b)
        if _is_bool(a) and _is_bool(b):
            return _bool_arith(a, b, op)
        _check_number(a, b, op)
        return getattr(_F(), op)(a, b)

    def __matmul__(self, other):
        return _F().matmul(self, other)

    def __rmatmul__(self, other):
        return _F().matmul(other, self)

    def __add__(self, other):
        return self._arith(other, "add")

    def __radd__(self, other):
        return self._arith(other, "add", True)

    def __sub__(self, other):
        return self._arith(other, "sub")

    def __rsub__(self, other):
        return self._arith(other, "sub", True)

    def __mul__(self, other):
        if _is_py_number(other) and self.type.is_float:
            return _F().scale(self, float(other))
        return self._arith(other, "mul")

    def __rmul__(self, other):
        if _is_py_number(other) and self.type.is_float:
            return _F().scale(self, float(other))
        return self._arith(other, "mul", True)

    def _div(self, other, reflected, floor):
        if not _is_operand(other):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        if _is_bool(a) and _is_bool(b):
            if floor:
                raise TraceError("'//' of two bools is not supported (NumPy gives int8); "
                                 "cast first (x.astype('int64'))", loc=_user_loc())
            a, b = _to(a, "float32"), _to(b, "float32")     # torch's bool / bool
        a, b = _promote_bool(a, b)
        _check_number(a, b, "//" if floor else "div")
        t = a if isinstance(a, Tensor) else b
        if floor and t.type.is_float:
            raise TraceError(f"'//' on a {t.dtype} tensor is not supported; use '/'",
                             loc=_user_loc())
        if not floor and not t.type.is_float:
            # NumPy's int / int is a float array; graphc's div keeps the dtype and floors.
            raise TraceError(f"'/' on a {t.dtype} tensor would floor (NumPy gives floats); "
                             "write '//' for floor division, or .astype('float32') first",
                             loc=_user_loc())
        return _F().div(a, b)

    def __truediv__(self, other):
        return self._div(other, False, False)

    def __rtruediv__(self, other):
        return self._div(other, True, False)

    def __floordiv__(self, other):
        return self._div(other, False, True)

    def __rfloordiv__(self, other):
        return self._div(other, True, True)

    def __neg__(self):
        if self.dtype == "bool":
            raise TraceError("unary '-' of a bool tensor is not supported (NumPy and torch "
                             "refuse it); write ~x for logical not", loc=_user_loc())
        return _F().neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _F().abs(self)

    def __pow__(self, p):
        """``x ** p``: a number (2, 0.5, -0.5, -1 and 1 become mul / sqrt / rsqrt /
        reciprocal / nothing) or a tensor, with NumPy's semantics."""
        if self.dtype == "bool" and _is_number(p):
            return self._to_number_dtype(p) ** p
        if _is_number(p):
            if self.type.is_float:
                p = float(p)
                fast = {1.0: lambda: self, 2.0: lambda: _F().mul(self, self),
                        0.5: lambda: _F().sqrt(self), -0.5: lambda: _F().rsqrt(self),
                        -1.0: lambda: _F().reciprocal(self)}
                if p in fast:
                    return fast[p]()
                return _F().pow(self, p)
            if isinstance(p, (float, np.floating)):
                raise TraceError(f"x ** {p!r} on a {self.dtype} tensor: NumPy gives floats; "
                                 f"cast first (x.astype('float32') ** {p!r}) or use an int "
                                 "exponent", loc=_user_loc())
            p = int(p)
            if p < 0:
                raise TraceError(f"x ** {p} on a {self.dtype} tensor: integers to negative "
                                 "powers are not allowed (as in NumPy); cast to float first",
                                 loc=_user_loc())
            if p == 1:
                return self
            if p == 2:
                return _F().mul(self, self)
            return _F().pow(self, p)
        return self._arith(p, "pow")

    def __rpow__(self, base):
        if self.dtype == "bool" and _is_number(base):
            return base ** self._to_number_dtype(base)
        if _is_number(base) and isinstance(base, (float, np.floating)) \
                and not self.type.is_float:
            raise TraceError(f"{base!r} ** x on a {self.dtype} tensor: NumPy gives floats; "
                             "cast first (x.astype('float32'))", loc=_user_loc())
        return self._arith(base, "pow", True)

    def _to_number_dtype(self, v):
        return self.astype("float32" if isinstance(v, (float, np.floating)) else "int64")

    # -- comparisons: bool tensors ------------------------------------------------------
    def _compare(self, other, op):
        if not _is_operand(other):
            return NotImplemented
        a, b = _promote_bool(self, other)
        if a.dtype.startswith("int") and _is_number(b):
            # Compare the values, as NumPy does (ids < 0.5, i32 < 2**40): the number is not
            # truncated or wrapped to the tensor's dtype.
            if _is_float_number(b):
                a = _to(a, "float64")
            elif not _int_fits(b, a.dtype):
                if not _int_fits(b, "int64"):
                    raise TraceError(f"comparison of a {a.dtype} tensor with {b!r}, which "
                                     "does not fit in int64", loc=_user_loc())
                a = _to(a, "int64")
        return getattr(_F(), op)(a, b)

    def __eq__(self, other):
        return self._compare(other, "equal")

    def __ne__(self, other):
        return self._compare(other, "not_equal")

    def __lt__(self, other):
        return self._compare(other, "less")

    def __le__(self, other):
        return self._compare(other, "less_equal")

    def __gt__(self, other):
        return self._compare(other, "greater")

    def __ge__(self, other):
        return self._compare(other, "greater_equal")

    # -- logic on bool ------------------------------------------------------------------
    def _logic(self, other, op, sym, reflected=False):
        if not _is_operand(other):
            return NotImplemented
        for v in (self, other):
            d = _dtype_of(v) if not isinstance(v, (bool, np.bool_)) else "bool"
            if d is None:                       # a Python number other than a bool
                d = type(v).__name__
            if d != "bool":
                raise TraceError(
                    f"'{sym}' on a {d} operand: graphc's & | ^ ~ are logical ops on bool "
                    f"tensors (bitwise ops on integers are not supported); compare first, "
                    f"e.g. (x > 0) {sym} (y == 1)", loc=_user_loc())
        a, b = (other, self) if reflected else (self, other)
        return getattr(_F(), op)(a, b)

    def __and__(self, other):
        return self._logic(other, "logical_and", "&")

    def __rand__(self, other):
        return self._logic(other, "logical_and", "&", True)

    def __or__(self, other):
        return self._logic(other, "logical_or", "|")

    def __ror__(self, other):
        return self._logic(other, "logical_or", "|", True)

    def __xor__(self, other):
        return self._logic(other, "logical_xor", "^")

    def __rxor__(self, other):
        return self._logic(other, "logical_xor", "^", True)

    def __invert__(self):
        if self.dtype != "bool":
            raise TraceError(f"'~' on a {self.dtype} tensor: graphc's ~ is logical not on "
                             "bool tensors (bitwise not of integers is not supported); "
                             "compare first, e.g. ~(x > 0)", loc=_user_loc())
        return _F().logical_not(self)

    # -- movement -----------------------------------------------------------------------
    @property
    def T(self):
        return _F().transpose(self)

    @property
    def mT(self):
        """the last two dims swapped (torch's ``x.mT``)"""
        if self.ndim < 2:
            raise TraceError(f"x.mT needs a tensor of rank >= 2, got {self.type}",
                             loc=_user_loc())
        return self.swapaxes(-1, -2)

    def transpose(self, *axes):
        """NumPy's ``transpose(axes)`` (a permutation of every axis); on a tensor of rank
        other than 2, two dims swap them as torch's ``transpose(d0, d1)`` does."""
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        if axes is not None and len(axes) == 2 and self.ndim != 2:
            return self.swapaxes(*axes)
        return _F().transpose(self, axes=tuple(axes) if axes else None)

    def swapaxes(self, a, b):
        a = _norm_dim(a, self.ndim, "swapaxes()")
        b = _norm_dim(b, self.ndim, "swapaxes()")
        perm = list(range(self.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return self if a == b else _F().transpose(self, axes=tuple(perm))

    swapdims = swapaxes

    def t(self):
        """torch's ``x.t()``: a 2-D tensor transposed (0-D and 1-D unchanged)."""
        if self.ndim > 2:
            raise TraceError(f"x.t() takes a tensor of rank <= 2, got {self.type}; use "
                             "x.transpose(d0, d1) or x.mT", loc=_user_loc())
        return self if self.ndim < 2 else _F().transpose(self)

    def permute(self, *dims):
        dims = _dims_arg(dims, "permute()")
        return _F().transpose(self, axes=dims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _F().reshape(self, shape=tuple(shape))

    view = reshape

    def view_as(self, other):
        return self.reshape(other.shape)

    reshape_as = view_as

    def chunk(self, chunks, dim=0):
        """torch's chunk: ``chunks`` parts of ceil(size / chunks) along ``dim`` (the last one
        smaller); a symbolic size must divide evenly."""
        from ..ir.dims import exact_div
        from .functional import split
        d = _norm_dim(dim, self.ndim, "chunk()")
        n = self.shape[d]
        if not isinstance(chunks, (int, np.integer)) or isinstance(chunks, bool) or chunks < 1:
            raise TraceError(f"chunk(): chunks must be a positive int, got {chunks!r}",
                             loc=_user_loc())
        if not isinstance(n, int):
            size = exact_div(n, int(chunks))
            if size is None:
                raise TraceError(f"chunk({chunks}): dim {d} of {self.type} is {n}, which "
                                 f"does not divide into {chunks} equal parts",
                                 loc=_user_loc())
            return tuple(split(self, int(chunks), axis=d))
        size = -(-n // int(chunks)) if n else 0
        sizes = [size] * (n // size) + ([n % size] if n % size else []) if size else [0]
        return tuple(split(self, sizes, axis=d))

    def split(self, split_size_or_sections, dim=0):
        """torch's split: parts of ``split_size`` along ``dim`` (the last one smaller), or
        of the listed sizes."""
        from .functional import split
        d = _norm_dim(dim, self.ndim, "split()")
        arg = split_size_or_sections
        if isinstance(arg, (list, tuple)):
            return tuple(split(self, list(arg), axis=d))
        n = self.shape[d]
        if not isinstance(arg, (int, np.integer)) or isinstance(arg, bool) or arg < 1:
            raise TraceError(f"split(): split_size must be a positive int or a list of "
                             f"sizes, got {arg!r}", loc=_user_loc())
        if not isinstance(n, int):
            from ..ir.dims import exact_div
            count = exact_div(n, int(arg))
            if count is None or not isinstance(count, int):
                raise TraceError(f"split({arg}): dim {d} of {self.type} is symbolic ({n}); "
                                 "give the list of sizes", loc=_user_loc())
            return tuple(split(self, count, axis=d))
        sizes = [int(arg)] * (n // arg) + ([n % arg] if n % arg else [])
        return tuple(split(self, sizes or [0], axis=d))

    def unbind(self, dim=0):
        """torch's unbind: the slices along ``dim`` (a fixed size) with that dim removed."""
        d = _norm_dim(dim, self.ndim, "unbind()")
        n = self.shape[d]
        if not isinstance(n, int):
            raise TraceError(f"unbind(): dim {d} of {self.type} is symbolic ({n}); it needs "
                             "a fixed size", loc=_user_loc())
        return tuple(p.squeeze(d) for p in self.split(1, d)) if n else ()

    def flatten(self, start_dim=0, end_dim=-1):
        """torch's flatten: dims start_dim..end_dim merged into one (a 0-d tensor
        becomes 1-d)."""
        from ..ir.dims import prod
        if self.ndim == 0:
            return self.reshape(1)
        s = _norm_dim(start_dim, self.ndim, "flatten()")
        e = _norm_dim(end_dim, self.ndim, "flatten()")
        if s > e:
            raise TraceError(f"flatten(): start_dim {start_dim} comes after end_dim "
                             f"{end_dim}", loc=_user_loc())
        shape = self.shape[:s] + (prod(self.shape[s:e + 1]),) + self.shape[e + 1:]
        return self if shape == self.shape else self.reshape(shape)

    def ravel(self):
        return self.flatten()

    def unsqueeze(self, dim):
        d = _norm_dim(dim, self.ndim, "unsqueeze()", extra=1)
        fn = _lazy_or_none("unsqueeze")
        if fn is not None:
            return fn(self, d)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim=None):
        """torch's squeeze: the given dims (all, with none) that have size 1 are removed;
        a dim of another size (or a symbolic one) stays."""
        if dim is None:
            dims = tuple(k for k, s in enumerate(self.shape) if s == 1)
        else:
            dims = dim if isinstance(dim, (tuple, list)) else (dim,)
            dims = tuple(sorted({_norm_dim(d, self.ndim, "squeeze()") for d in dims}))
            dims = tuple(k for k in dims if self.shape[k] == 1)
        if not dims:
            return self
        fn = _lazy_or_none("squeeze")
        if fn is not None:
            out = self
            for d in reversed(dims):
                out = fn(out, d)
            return out
        return self.reshape(tuple(s for k, s in enumerate(self.shape) if k not in dims))

    def expand(self, *sizes):
        """torch's expand: broadcast to ``sizes`` (-1 keeps a dim; new dims go in front),
        without copies."""
        sizes = _dims_arg(sizes, "expand()")
        if len(sizes) < self.ndim:
            raise TraceError(f"expand{sizes}: {len(sizes)} sizes for a rank-{self.ndim} "
                             f"tensor {self.type}", loc=_user_loc())
        lead = len(sizes) - self.ndim
        shape = []
        for k, s in enumerate(sizes):
            if isinstance(s, int) and s == -1:
                if k < lead:
                    raise TraceError(f"expand{sizes}: -1 is not allowed for a new leading "
                                     "dim", loc=_user_loc())
                s = self.shape[k - lead]
            shape.append(s)
        if tuple(shape) == self.shape:
            return self
        return _lazy("broadcast_to", "x.expand()")(self, tuple(shape))

    def expand_as(self, other):
        return self.expand(other.shape)

    def broadcast_to(self, shape):
        return _lazy("broadcast_to", "x.broadcast_to()")(self, tuple(shape))

    def contiguous(self, *args, **kwargs):
        """a no-op: graphc decides layouts"""
        return self

    def clone(self):
        return self

    def detach(self):
        return self

    # -- dtypes -------------------------------------------------------------------------
    def astype(self, dtype):
        return _F().cast(self, dtype=dtype)

    def to(self, *args, **kwargs):
        """torch's ``x.to(dtype)`` / ``x.to(other)``; a device ('cpu', 'cuda') or
        ``copy=``/``non_blocking=`` change nothing here."""
        dtype = kwargs.pop("dtype", None)
        for a in args:
            if isinstance(a, Tensor):
                dtype = a.dtype
            elif isinstance(a, str) and a.split(":")[0] in ("cpu", "cuda", "meta", "mps"):
                continue
            elif type(a).__name__ == "device":
                continue
            else:
                dtype = a
        if dtype is None:
            return self
        return self._cast(_torch_dtype(dtype))

    def _cast(self, dtype):
        from ..ir.types import normalize_dtype
        try:
            dtype = normalize_dtype(dtype)
        except ValueError as e:
            raise TraceError(f"cast to {dtype!r}: {e}", loc=_user_loc()) from None
        return self if dtype == self.dtype else _F().cast(self, dtype=dtype)

    def type_as(self, other):
        return self._cast(other.dtype)

    def float(self):
        return self._cast("float32")

    def double(self):
        return self._cast("float64")

    def long(self):
        return self._cast("int64")

    def int(self):
        return self._cast("int32")

    def bool(self):
        return self._cast("bool")

    # -- reductions ---------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _axis_kw(axis, dim, keepdims, keepdim, "sum()")
        return _F().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _axis_kw(axis, dim, keepdims, keepdim, "mean()")
        return _F().mean(self, axis=axis, keepdims=keepdims)

    def _minmax(self, name, axis, keepdims, dim, keepdim):
        if isinstance(axis, (Tensor, np.ndarray)):
            # torch's x.max(other) / x.min(other): the elementwise maximum / minimum
            return self._arith(axis, "maximum" if name == "max" else "minimum")
        by_dim = dim is not None
        axis, keepdims = _axis_kw(axis, dim, keepdims, keepdim, f"{name}()")
        fn = _F().max if name == "max" else _lazy("min", "x.min()")
        values = fn(self, axis=axis, keepdims=keepdims)
        if not by_dim:
            return values        # NumPy's form: the values
        arg = "argmax" if name == "max" else "argmin"
        # torch's x.max(dim=d): (values, indices); the indices are traced if read.
        return _LazyMinMax(values, lambda: _lazy(arg, f"x.{name}(dim=...).indices")(
            self, axis, keepdims=keepdims))

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """NumPy's ``x.max(axis)`` gives the values; torch's ``x.max(dim=d)`` gives
        (values, indices)."""
        return self._minmax("max", axis, keepdims, dim, keepdim)

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return self._minmax("min", axis, keepdims, dim, keepdim)

    def _arg(self, name, axis, keepdims, dim, keepdim):
        axis, keepdims = _axis_kw(axis, dim, keepdims, keepdim, f"{name}()")
        fn = _lazy(name, f"x.{name}()")
        if axis is None:                 # the index into the flattened tensor
            out = fn(self.flatten(), 0)
            return out.reshape((1,) * self.ndim) if keepdims else out
        return fn(self, axis, keepdims=keepdims)

    def argmax(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return self._arg("argmax", axis, keepdims, dim, keepdim)

    def argmin(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return self._arg("argmin", axis, keepdims, dim, keepdim)

    def softmax(self, dim=-1, *, axis=None):
        return _F().softmax(self, axis=dim if axis is None else axis)

    def cumsum(self, dim=None, *, axis=None):
        axis = dim if axis is None else axis
        if axis is None:
            return _lazy("cumsum", "x.cumsum()")(self.flatten(), 0)
        return _lazy("cumsum", "x.cumsum()")(self, axis)

    def repeat_interleave(self, repeats, dim=None):
        """torch's repeat_interleave (NumPy's repeat): each element ``repeats`` times
        along ``dim`` (over the flattened tensor without one)."""
        if not isinstance(repeats, (int, np.integer)) or isinstance(repeats, bool):
            raise TraceError(f"repeat_interleave(): repeats must be an int, got "
                             f"{type(repeats).__name__}", loc=_user_loc())
        fn = _lazy("repeat", "x.repeat_interleave()")
        if dim is None:
            return fn(self.flatten(), int(repeats), 0)
        return fn(self, int(repeats), _norm_dim(dim, self.ndim, "repeat_interleave()"))

    def triu(self, diagonal=0):
        return _lazy("triu", "x.triu()")(self, diagonal)

    def tril(self, diagonal=0):
        return _lazy("tril", "x.tril()")(self, diagonal)

    def gather(self, dim, index):
        """torch's gather with an index of the tensor's rank (NumPy's take_along_axis)."""
        return _lazy("take_along_axis", "x.gather()")(self, index, dim)

    def take_along_axis(self, index, axis):
        return _lazy("take_along_axis", "x.take_along_axis()")(self, index, axis)

    # -- elementwise methods --------------------------------------------------------------
    def masked_fill(self, mask, value):
        """``value`` where ``mask`` (bool) holds, else x (torch's masked_fill)."""
        if isinstance(mask, Tensor) and mask.dtype != "bool":
            raise TraceError(f"masked_fill(): the mask must be a bool tensor, got "
                             f"{mask.dtype}; compare first (mask == 0)", loc=_user_loc())
        if isinstance(value, Tensor) and value.dtype != self.dtype:
            value = value.astype(self.dtype)
        return _F().where(mask, value, self)

    def where(self, condition, other):
        """torch's ``x.where(cond, y)``: x where cond holds, else y."""
        return _F().where(condition, self, other)

    def clip(self, min=None, max=None):
        return _F().clip(self, min=min, max=max)

    clamp = clip

    def pow(self, p):
        return self ** p

    def matmul(self, other):
        return self @ other

    def eq(self, other):
        return self == other

    def ne(self, other):
        return self != other

    def lt(self, other):
        return self < other

    def le(self, other):
        return self <= other

    def gt(self, other):
        return self > other

    def ge(self, other):
        return self >= other

    def logical_not(self):
        return _F().logical_not(self)

    def logical_and(self, other):
        return _F().logical_and(self, other)

    def logical_or(self, other):
        return _F().logical_or(self, other)

    def logical_xor(self, other):
        return _F().logical_xor(self, other)

    def __getitem__(self, index):
        from .indexing import getitem
        return getitem(self, index)


def _lazy_or_none(name):
    import graphc
    return getattr(graphc, name, None)


def _unary_method(op):
    def method(self):
        return getattr(_F(), op)(self)
    method.__name__ = op
    method.__doc__ = f"graphc.{op}(x)"
    return method


for _name in ("exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "sin", "cos", "abs",
              "sign", "floor", "ceil", "isnan", "isinf", "reciprocal", "log1p", "expm1",
              "erf", "relu", "neg"):
    setattr(Tensor, _name, _unary_method(_name))
Tensor.negative = Tensor.neg
Tensor.absolute = Tensor.abs
del _name
