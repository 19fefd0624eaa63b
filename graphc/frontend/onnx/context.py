"""What an ONNX value name stands for during import, and the per-node helper that
translation functions use.

A value is a graphc Tensor, or a *known* value: a small array computed at import time
(an initializer, a Constant, and the shape arithmetic of a model: Shape, Gather / Slice /
Concat on shapes, Range...). A known int vector may hold symbolic dims (an object array
of ints and :class:`~graphc.ir.dims.Sym`), so ``Shape -> Gather -> Unsqueeze -> Concat
-> Reshape`` becomes one ``reshape`` to a symbolic shape and nothing runs at call time.
A known value becomes a tensor (a constant, or an ``arange`` of one symbolic dim) only
where an op needs it as one."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ir.dims import Sym
from ...ir.types import DTYPES
from ..tensor import Tensor
from .errors import NeedsValueError, OnnxImportError

# The most elements a known value computed at import may have (shape arithmetic is
# small; anything larger is left to the graph, where the fold pass sees it).
KNOWN_LIMIT = 4096


@dataclass
class Known:
    """A value computed at import: ``array`` (a NumPy array of ``dtype``, or an object
    array of ints and symbolic dims), ``dtype`` the graphc dtype it has."""

    array: np.ndarray
    dtype: str

    @property
    def symbolic(self) -> bool:
        return self.array.dtype == object and any(isinstance(x, Sym)
                                                  for x in self.array.reshape(-1))


def np_dtype(dtype: str) -> np.dtype:
    return DTYPES[dtype][1]


def known_of(array, dtype: str) -> Known:
    """Normalise an import-time result: plain ints when no dim is symbolic."""
    a = np.asarray(array, dtype=object) if not isinstance(array, np.ndarray) else array
    if a.dtype == object:
        flat = a.reshape(-1)
        if not any(isinstance(x, Sym) for x in flat):
            a = np.array([_plain(x) for x in flat], dtype=np_dtype(dtype)).reshape(a.shape)
        else:
            a = np.array([_plain(x) for x in flat], dtype=object).reshape(a.shape)
    else:
        a = a.astype(np_dtype(dtype), copy=False)
    return Known(a, dtype)


def _plain(x):
    if isinstance(x, Sym):
        return x
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


@dataclass
class Val:
    tensor: Tensor | None = None
    known: Known | None = None
    graph_input: str | None = None       # the graph input this value is (if any)
    sources: frozenset = frozenset()     # the graph inputs a tensor is computed from


class Values:
    """name -> Val for one import; makes tensors of known values on demand."""

    def __init__(self, builder):
        self.builder = builder
        self.table: dict[str, Val] = {}

    def set(self, name: str, out) -> None:
        if isinstance(out, Tensor):
            self.table[name] = Val(tensor=out)
        elif isinstance(out, Known):
            self.table[name] = Val(known=out)
        elif isinstance(out, Val):
            self.table[name] = out
        else:
            raise TypeError(f"bad translation output {type(out).__name__}")

    def get(self, name: str) -> Val:
        return self.table[name]

    def tensor(self, name: str) -> Tensor:
        v = self.table[name]
        if v.tensor is None:
            v.tensor = materialize(self.builder, v.known, name)
        return v.tensor


def materialize(builder, k: Known, name: str | None = None) -> Tensor:
    """A graph tensor holding the known value ``k`` (a constant named for the ONNX
    value it is, or an arange per symbolic dim)."""
    from ... import ops
    arr = k.array
    if arr.dtype != object:
        return builder.wrap(builder.constant(np.array(arr, order="C"),   # keeps 0-d
                                             name=name))
    flat = list(arr.reshape(-1))
    pieces, run = [], []
    for x in flat:
        if isinstance(x, Sym):
            if run:
                pieces.append(builder.wrap(builder.constant(np.array(run, np_dtype(k.dtype)))))
                run = []
            pieces.append(ops.arange(x, x + 1, dtype=k.dtype if k.dtype != "bool"
                                     else "int64"))
        else:
            run.append(x)
    if run:
        pieces.append(builder.wrap(builder.constant(np.array(run, np_dtype(k.dtype)))))
    out = pieces[0] if len(pieces) == 1 else ops.concat(*pieces, axis=0)
    if arr.ndim != 1:
        out = ops.reshape(out, shape=arr.shape)
    return out


@dataclass
class NodeCtx:
    """One node being translated: its inputs, attributes and opset."""

    node: Any                     # onnx.NodeProto
    values: Values
    opset: int
    loc: Any
    attrs: dict = field(default_factory=dict)

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def name(self) -> str:
        return self.loc.node_name

    @property
    def n_in(self) -> int:
        return len(self.node.input)

    @property
    def n_out(self) -> int:
        return len(self.node.output)

    def wants(self, k: int) -> bool:
        """Whether output ``k`` is asked for."""
        return k < len(self.node.output) and self.node.output[k] != ""

    def has(self, k: int) -> bool:
        return k < len(self.node.input) and self.node.input[k] != ""

    def val(self, k: int) -> Val:
        return self.values.get(self.node.input[k])

    def t(self, k: int) -> Tensor:
        return self.values.tensor(self.node.input[k])

    def ts(self) -> list:
        return [self.t(k) for k in range(self.n_in) if self.has(k)]

    def known(self, k: int) -> Known | None:
        if not self.has(k):
            return None
        return self.val(k).known

    def need(self, k: int, what: str) -> np.ndarray:
        """The import-time value of input ``k`` (a shape, axes, a count...), or an error
        saying which value graphc needs to know."""
        v = self.val(k)
        if v.known is not None:
            return v.known.array
        if v.graph_input is not None:
            raise NeedsValueError(
                f"{self.op_type} node {self.name!r}: its {what} (input {k}, "
                f"{self.node.input[k]!r}) is the graph input {v.graph_input!r}, whose value "
                f"graphc must know when it imports the model; pass from_onnx(..., "
                f"values={{{v.graph_input!r}: array}})", v.graph_input, op=self.op_type,
                loc=self.loc)
        if v.sources:
            src = sorted(v.sources)[0]
            raise NeedsValueError(
                f"{self.op_type} node {self.name!r}: its {what} (input {k}, "
                f"{self.node.input[k]!r}) is computed from the graph input {src!r}, whose "
                f"value graphc must know when it imports the model; pass from_onnx(..., "
                f"values={{{src!r}: array}})", src, op=self.op_type, loc=self.loc)
        raise OnnxImportError(
            f"{self.op_type} node {self.name!r}: its {what} (input {k}, "
            f"{self.node.input[k]!r}) is computed from tensor data, not from shapes or "
            f"constants, so graphc cannot know it when it imports the model (graphc "
            f"compiles for shapes fixed or symbolic at import). If it is shape arithmetic "
            f"with no symbolic form (Min / Max of a dynamic dim and a constant, as GPT-Neo's "
            f"export has), pin that dim: from_onnx(..., dims={{'seq': 128}})",
            op=self.op_type, loc=self.loc)

    def need_ints(self, k: int, what: str) -> list:
        a = self.need(k, what)
        return [_plain(x) if isinstance(x, Sym) else int(x) for x in np.asarray(a).reshape(-1)]

    def dtype(self, k: int) -> str:
        v = self.val(k)
        return v.tensor.dtype if v.tensor is not None else v.known.dtype

    def shape(self, k: int) -> tuple:
        v = self.val(k)
        return tuple(v.tensor.shape) if v.tensor is not None else tuple(v.known.array.shape)

    def rank(self, k: int) -> int:
        return len(self.shape(k))

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def all_known(self, ks=None) -> bool:
        ks = range(self.n_in) if ks is None else ks
        return all(not self.has(k) or self.known(k) is not None for k in ks)

    def small_known(self, ks=None) -> bool:
        """Every present input known and small: fold at import (shape arithmetic, and
        the constants a model computes from constants)."""
        ks = list(range(self.n_in)) if ks is None else ks
        for k in ks:
            if not self.has(k):
                continue
            kn = self.known(k)
            if kn is None or kn.array.size > KNOWN_LIMIT:
                return False
        return True

    def fail(self, message: str, cls=OnnxImportError):
        return cls(f"{self.op_type} node {self.name!r}: {message}", op=self.op_type,
                   loc=self.loc)
