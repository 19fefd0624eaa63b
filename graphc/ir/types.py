"""Tensor types: a shape of int or symbolic dims, and a dtype."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .dims import Dim, Sym, as_dim, evaluate

# name -> (short name for printing, numpy dtype)
DTYPES = {
    "float32": ("f32", np.dtype(np.float32)),
    "float64": ("f64", np.dtype(np.float64)),
    "int32": ("i32", np.dtype(np.int32)),
    "int64": ("i64", np.dtype(np.int64)),
    "bool": ("bool", np.dtype(np.bool_)),
}
FLOAT_DTYPES = ("float32", "float64")
INT_DTYPES = ("int32", "int64")


# names whose width depends on who reads them (NumPy: 'float' is float64, torch: float32)
AMBIGUOUS_DTYPES = {"float": ("float32", "float64"), "int": ("int32", "int64")}


def normalize_dtype(dtype) -> str:
    """Accept 'float32', np.float32, np.dtype('float32'), 'f32'; return the canonical name.
    'float' and 'int' are a DTypeError (NumPy reads 'float' as float64, torch as float32):
    say float32 or float64, int32 or int64. So is None (NumPy: float64)."""
    if dtype is None:               # np.dtype(None) is float64; graphc's default, float32
        from ..errors import DTypeError
        from .node import capture_loc
        raise DTypeError("dtype None: NumPy reads it as float64, graphc's default is float32: "
                         "write 'float32' or 'float64'", loc=capture_loc())
    if isinstance(dtype, str):
        if dtype.strip().lower() in AMBIGUOUS_DTYPES:
            from ..errors import DTypeError
            from .node import capture_loc
            a, b = AMBIGUOUS_DTYPES[dtype.strip().lower()]
            raise DTypeError(f"dtype {dtype!r} is ambiguous (NumPy reads it as {b}, torch as "
                             f"{a}): write {a!r} or {b!r}", loc=capture_loc())
        for name, (short, _) in DTYPES.items():
            if dtype in (name, short):
                return name
    try:
        npd = np.dtype(dtype)
    except TypeError:
        npd = None
    if npd is not None:
        for name, (_, d) in DTYPES.items():
            if d == npd:
                return name
    raise ValueError(f"unsupported dtype {dtype!r}; graphc supports {', '.join(DTYPES)}")


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(as_dim(d) for d in self.shape))
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype][1]

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def symbols(self) -> frozenset[str]:
        out: set[str] = set()
        for d in self.shape:
            if isinstance(d, Sym):
                out |= d.symbols
        return frozenset(out)

    @property
    def is_static(self) -> bool:
        return not self.symbols

    def concrete_shape(self, bindings: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(evaluate(d, bindings) for d in self.shape)

    def nbytes(self, bindings: Mapping[str, int] | None = None) -> int:
        n = self.np_dtype.itemsize
        for d in self.concrete_shape(bindings or {}):
            n *= d
        return n

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        return f"{DTYPES[self.dtype][0]}[{','.join(str(d) for d in self.shape)}]"

    __repr__ = __str__
