"""Tracing: run the user's function on Tensor proxies and record the ops into a Graph."""
from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import GraphcError, TraceError
from ..ir.dims import Sym
from ..ir.graph import Graph
from ..ir.node import SourceLoc, capture_loc
from ..ir.types import TensorType, normalize_dtype
from ..ops.registry import OpDef, build_node
from .tensor import Tensor


@dataclass(frozen=True)
class Spec:
    """The declared type of one graph input (see :func:`spec`)."""

    type: TensorType
    name: str | None = None

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype


def spec(shape, dtype="float32", name: str | None = None) -> Spec:
    """Declare a traced input: ``spec(("S", 768), "float32")``. A string dim is a symbol
    that binds to one size per call."""
    if isinstance(shape, (int, str)):
        shape = (shape,)
    try:
        t = TensorType(tuple(shape), normalize_dtype(dtype))
    except (TypeError, ValueError) as e:
        raise TraceError(f"bad spec(shape={shape!r}, dtype={dtype!r}): {e}",
                         loc=capture_loc()) from None
    for d in t.shape:
        # A call binds each input dim to one array size: only a plain symbol can be solved.
        plain = isinstance(d, Sym) and len(d.terms) == 1 and d.terms[0][1] == 1 \
            and len(d.terms[0][0]) == 1
        if not plain and not (isinstance(d, int) and d >= 0):
            raise TraceError(f"bad spec(shape={shape!r}): dim {d} must be an int >= 0 or "
                             "a plain symbol name such as 'S'", loc=capture_loc())
    return Spec(t, name)


class Builder:
    """Adds nodes to one Graph. ``loc`` pins the source location (used by passes that
    emit nodes on behalf of an existing node); otherwise each node gets the user's line."""

    def __init__(self, graph: Graph, loc: SourceLoc | None = None):
        self.graph = graph
        self.loc = loc
        self._const_cache: dict[int, tuple[np.ndarray, int]] = {}

    def wrap(self, node_id: int) -> Tensor:
        return Tensor(self, node_id)

    def constant(self, value: np.ndarray, loc=None, name: str | None = None) -> int:
        """The constant node for ``value``; the same array object gives the same node."""
        key = id(value)
        hit = self._const_cache.get(key)
        if hit is not None and hit[0] is value:
            return hit[1]
        node = self.graph.add_constant(value, loc=loc or self.loc or capture_loc(), name=name)
        self._const_cache[key] = (value, node.id)
        return node.id

    def scalar(self, value, dtype: str, loc=None) -> int:
        arr = np.asarray(value, dtype=TensorType((), dtype).np_dtype)
        node = self.graph.add_constant(arr, loc=loc or self.loc or capture_loc())
        if arr.dtype.kind == "f":
            # Keep the exact Python number: the float64 oracle uses it, not its float32
            # rounding (1e-5 in a float32 graph would otherwise move results by ~1e-12).
            node.attrs["value"] = float(value)
        return node.id


_state = threading.local()


def _stack() -> list[Builder]:
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


@contextmanager
def building(builder: Builder):
    """Make ``builder`` the current one (nullary ops and decompositions use it)."""
    _stack().append(builder)
    try:
        yield builder
    finally:
        _stack().pop()


def current_builder() -> Builder | None:
    s = _stack()
    return s[-1] if s else None


def emit(op: OpDef, operands: list, attrs: dict) -> Tensor:
    """Record ``op(operands, attrs)``: the single path by which every op enters a graph."""
    builder = None
    for o in operands:
        if isinstance(o, Tensor):
            if builder is None:
                builder = o.builder
            elif o.builder is not builder:
                raise TraceError(f"{op.name}(): operands come from different traces",
                                 op=op.name, loc=capture_loc())
    if builder is None:
        builder = current_builder()
    if builder is None:
        return _eager(op, operands, attrs)
    loc = builder.loc or capture_loc()
    # A Python number takes the dtype of the tensors it meets; a bool operand (the
    # condition of where) says nothing about the dtype of the values.
    dtypes = [o.dtype for o in operands if isinstance(o, Tensor)]
    dtype = next((d for d in dtypes if d != "bool"), dtypes[0] if dtypes else None)
    ids = []
    for o in operands:
        if isinstance(o, Tensor):
            ids.append(o.id)
        elif isinstance(o, np.ndarray):
            ids.append(builder.constant(o, loc))
        elif isinstance(o, (bool, int, float, np.number, np.bool_)):
            is_float = isinstance(o, (float, np.floating))    # np.float32(0.5) too
            dt = dtype or ("float32" if is_float else "int64")
            if is_float and dt not in ("float32", "float64"):
                dt = "float32"          # meets an int tensor: a DTypeError, never truncated
            if op.name == "where" and not ids and isinstance(o, (bool, np.bool_)):
                dt = "bool"             # where(True, a, b): the condition stays a bool
            ids.append(builder.scalar(o, dt, loc))
        elif isinstance(o, (list, tuple)):
            ids.append(builder.constant(np.asarray(o), loc))
        else:
            raise TraceError(f"{op.name}(): operand of type {type(o).__name__} is not a "
                             "tensor, an array or a number", op=op.name, loc=loc)
    node = build_node(builder.graph, op, ids, attrs, loc)
    return Tensor(builder, node.id)


def _eager(op: OpDef, operands: list, attrs: dict):
    """An op called on plain arrays outside a trace: build a one-node graph and run it on
    the reference interpreter, so eager calls get the same checks as traced ones."""
    g = Graph(f"eager_{op.name}")
    b = Builder(g)
    arrays, args = [], []
    with building(b):
        for o in operands:
            if isinstance(o, (bool, int, float, np.number)):
                args.append(o)  # a scalar takes the arrays' dtype, as in a trace
                continue
            a = np.asarray(o)
            arrays.append(a)
            args.append(b.wrap(g.add_input(f"x{len(arrays) - 1}",
                                           TensorType(a.shape, a.dtype)).id))
        out = emit(op, args, attrs)
    g.outputs = [out.id]
    from ..runtime.interpreter import run_graph
    return run_graph(g, arrays)[0]


def _param_names(fn: Callable, n: int) -> list[str]:
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        params = []
    names = []
    for i in range(n):
        if i < len(params) and params[i].kind != params[i].VAR_POSITIONAL:
            names.append(params[i].name)
        else:
            names.append(f"arg{i}")
    return names


def _check_call(fn: Callable, name: str, args: list, kwargs: dict, loc) -> None:
    """A spec count that does not fit ``fn`` is the caller's mistake: say so at trace()."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        raise TraceError(f"trace(): {name}{sig} cannot be called with {len(args)} positional "
                         f"specs and keywords {sorted(kwargs)}: {e}", loc=loc) from None


def trace(fn: Callable, *specs: Spec, name: str | None = None, **kwargs: Any) -> Graph:
    """Trace ``fn`` on symbolic inputs and return the recorded :class:`Graph`.

    Positional ``specs`` become the graph inputs in order. Keyword arguments that are
    specs become inputs too (named by their keyword); any other keyword argument is passed
    to ``fn`` unchanged (config numbers, flags). NumPy arrays ``fn`` uses become constants.
    """
    loc = capture_loc()
    for i, s in enumerate(specs):
        if not isinstance(s, Spec):
            raise TraceError(f"trace(): positional argument {i + 1} must be graphc.spec(...), "
                             f"got {type(s).__name__}; pass Python values as keywords",
                             loc=loc)
    graph = Graph(name or getattr(fn, "__name__", "graph"))
    builder = Builder(graph)
    names = _param_names(fn, len(specs))
    args = [builder.wrap(graph.add_input(s.name or n, s.type, loc).id)
            for s, n in zip(specs, names)]
    call_kwargs = {}
    for k, v in kwargs.items():
        if isinstance(v, Spec):
            call_kwargs[k] = builder.wrap(graph.add_input(v.name or k, v.type, loc).id)
        else:
            call_kwargs[k] = v
    _check_call(fn, graph.name, args, call_kwargs, loc)
    with building(builder):
        result = fn(*args, **call_kwargs)
    outs = result if isinstance(result, (tuple, list)) else (result,)
    if not outs:
        raise TraceError(f"traced function {graph.name} returned no tensors", loc=loc)
    out_ids = []
    for k, o in enumerate(outs):
        if isinstance(o, np.ndarray):
            o = builder.wrap(builder.constant(o, loc))
        if not isinstance(o, Tensor) or o.builder is not builder:
            raise TraceError(f"traced function {graph.name} returned "
                             f"{type(o).__name__} as output {k}; return traced tensors",
                             loc=loc)
        out_ids.append(o.id)
    graph.outputs = out_ids
    graph.meta = {"single_output": not isinstance(result, (tuple, list))}
    _check_symbols_bound(graph)
    return graph


def _attr_symbols(v) -> set[str]:
    if isinstance(v, Sym):
        return set(v.symbols)
    if isinstance(v, (tuple, list)):
        return set().union(*(_attr_symbols(x) for x in v))
    return set()


def _check_symbols_bound(graph: Graph) -> None:
    """Every symbol a node uses must come from an input spec, or no call can size it."""
    bound = set().union(*(t.symbols for t in graph.input_types))
    for nid in sorted(graph.nodes):
        node = graph.nodes[nid]
        missing = (set(node.type.symbols) | _attr_symbols(tuple(node.attrs.values()))) - bound
        if missing:
            raise TraceError(f"symbol {', '.join(sorted(missing))} is not a dim of any input "
                             f"spec, so no call can give it a size; declare it in a spec",
                             op=node.op, node=node.name, loc=node.loc)


__all__ = ["Spec", "spec", "trace", "Builder", "building", "current_builder", "emit",
           "GraphcError"]
