"""The Tensor proxy a traced function computes with.

Operators follow NumPy: ``@``, ``+ - * /`` with broadcasting, unary ``-``, ``.T``,
``.reshape`` (with -1, also over symbolic dims), ``.transpose`` (NumPy argument forms),
``[]`` slicing (ints, slices, ``None``, ``...``), ``.shape``, ``.dtype``.
"""
from __future__ import annotations

from ..errors import TraceError
from ..ir.node import capture_loc


def _F():
    from .. import ops
    return ops


class Tensor:
    # Make NumPy defer to our reflected operators (``ndarray @ Tensor``).
    __array_ufunc__ = None

    def __init__(self, builder, node_id: int):
        self.builder = builder
        self.id = node_id

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

    def __len__(self) -> int:
        if not self.shape:
            raise TraceError("len() of a 0-d tensor", loc=capture_loc())
        d = self.shape[0]
        if not isinstance(d, int):
            raise TraceError(f"len() of a tensor whose first dim is symbolic ({d}); "
                             "use .shape[0]", loc=capture_loc())
        return d

    def __bool__(self):
        raise TraceError("a traced tensor has no truth value: Python control flow cannot "
                         "depend on tensor data (use graphc.where)", loc=capture_loc())

    def __iter__(self):
        raise TraceError("cannot iterate over a traced tensor; use slicing or graphc.split",
                         loc=capture_loc())

    def __repr__(self) -> str:
        return f"Tensor(%{self.id}: {self.type})"

    # -- arithmetic ---------------------------------------------------------------------
    def __matmul__(self, other):
        return _F().matmul(self, other)

    def __rmatmul__(self, other):
        return _F().matmul(other, self)

    def __add__(self, other):
        return _F().add(self, other)

    def __radd__(self, other):
        return _F().add(other, self)

    def __sub__(self, other):
        return _F().sub(self, other)

    def __rsub__(self, other):
        return _F().sub(other, self)

    def __mul__(self, other):
        if _is_py_number(other) and self.type.is_float:
            return _F().scale(self, float(other))
        return _F().mul(self, other)

    def __rmul__(self, other):
        if _is_py_number(other) and self.type.is_float:
            return _F().scale(self, float(other))
        return _F().mul(other, self)

    def __truediv__(self, other):
        self._true_div_check()
        return _F().div(self, other)

    def __rtruediv__(self, other):
        self._true_div_check()
        return _F().div(other, self)

    def __floordiv__(self, other):
        self._floor_div_check()
        return _F().div(self, other)

    def __rfloordiv__(self, other):
        self._floor_div_check()
        return _F().div(other, self)

    def _true_div_check(self):
        # NumPy's int / int is a float array; graphc's div keeps the dtype and floors.
        if not self.type.is_float:
            raise TraceError(f"'/' on a {self.dtype} tensor would floor (NumPy gives floats); "
                             "write '//' for floor division, or .astype('float32') first",
                             loc=capture_loc())

    def _floor_div_check(self):
        if self.type.is_float:
            raise TraceError(f"'//' on a {self.dtype} tensor is not supported; use '/'",
                             loc=capture_loc())

    def __neg__(self):
        return _F().neg(self)

    def __pos__(self):
        return self

    def __pow__(self, p):
        if p == 2:
            return _F().mul(self, self)
        if p == 0.5:
            return _F().sqrt(self)
        if p == -0.5:
            return _F().rsqrt(self)
        if p == 1:
            return self
        raise TraceError(f"x ** {p!r} is not supported (only 2, 1, 0.5 and -0.5)",
                         loc=capture_loc())

    def __lt__(self, other):
        return _F().less(self, other)

    def __gt__(self, other):
        return _F().greater(self, other)

    # -- movement -----------------------------------------------------------------------
    @property
    def T(self):
        return _F().transpose(self)

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        return _F().transpose(self, axes=tuple(axes) if axes else None)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _F().reshape(self, shape=tuple(shape))

    def astype(self, dtype):
        return _F().cast(self, dtype=dtype)

    def sum(self, axis=None, keepdims=False):
        return _F().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _F().mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return _F().max(self, axis=axis, keepdims=keepdims)

    def __getitem__(self, index):
        from .indexing import getitem
        return getitem(self, index)


def _is_py_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
