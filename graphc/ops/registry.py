"""The op registry: one declaration per op.

An op is a NumPy reference function decorated with :func:`register_op`. Its positional
parameters are the tensor inputs (``*xs`` for a variadic op), its keyword-only parameters
are attributes (a default makes an attribute optional). The declaration also gives the op
kind (which drives fusion), type inference and, for composite ops, a decomposition into
primitives written with the same frontend functions a model uses.

The registered :class:`OpDef` is itself the user-facing function: inside ``graphc.trace``
it records a node; called on plain NumPy arrays it runs the reference implementation.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import (AttrError, DTypeError, GraphcError, RegistrationError, ShapeError,
                      UnknownOpError)
from ..ir.dims import Sym
from ..ir.node import capture_loc
from ..ir.types import FLOAT_DTYPES, TensorType

KINDS = ("elementwise", "broadcast", "reduction", "contraction", "movement", "opaque")

_REGISTRY: dict[str, "OpDef"] = {}

_REQUIRED = object()


@dataclass
class OpDef:
    name: str
    kind: str
    reference: Callable
    infer: Callable[[list, dict], TensorType]
    inputs: tuple[str, ...]
    variadic: bool
    attrs: dict[str, Any]                 # attr name -> default (or _REQUIRED)
    decompose: Callable | None = None
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Loop-IR lowerings (graphc/lower): at most one per op, by the shape of computation.
    lower: Callable | None = None          # elementwise: (node, *operand values) -> Expr
    lower_index: Callable | None = None    # movement / generator: (node, idx, operand) -> Expr
    lower_row: Callable | None = None      # reduction: (RowContext) -> statements of a row

    @property
    def compiles(self) -> bool:
        """Whether the compiled backends can run the op: a loop-IR lowering, a
        decomposition, or a kind they run natively (contraction templates, opaque ops
        through their native kernel or NumPy reference)."""
        return (self.kind in ("contraction", "opaque") or self.decompose is not None
                or any(f is not None for f in (self.lower, self.lower_index, self.lower_row)))

    # -- calling ------------------------------------------------------------------------
    def bind(self, args: tuple, kwargs: dict) -> tuple[list, dict]:
        """Split a call into (tensor operands, attrs), NumPy-style argument forms allowed:
        an attribute may be given positionally after the tensor operands."""
        args = list(args)
        if self.variadic:
            operands = args
            extra_pos: list = []
            # A trailing non-tensor positional value is an attribute (``concat(xs, 0)``).
            while operands and _is_attr_value(operands[-1]) and len(operands) > 1:
                extra_pos.insert(0, operands.pop())
            if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
                operands = list(operands[0])
        else:
            n = len(self.inputs)
            operands, extra_pos = args[:n], args[n:]
        attr_names = list(self.attrs)
        attrs: dict[str, Any] = {}
        if len(extra_pos) > len(attr_names):
            raise AttrError(f"{self.name}() takes {len(self.inputs)} tensor operands and "
                            f"attributes {attr_names}, got {len(args)} positional arguments",
                            op=self.name, loc=capture_loc())
        for name, v in zip(attr_names, extra_pos):
            attrs[name] = v
        for k, v in kwargs.items():
            if k in self.inputs and not self.variadic:
                idx = self.inputs.index(k)
                while len(operands) <= idx:
                    operands.append(_MISSING)
                operands[idx] = v
                continue
            if k not in self.attrs:
                raise AttrError(f"{self.name}() got an unknown attribute {k!r}; "
                                f"it takes {attr_names or 'no attributes'}", op=self.name,
                                loc=capture_loc())
            if k in attrs:
                raise AttrError(f"{self.name}() got attribute {k!r} twice", op=self.name,
                                loc=capture_loc())
            attrs[k] = v
        if not self.variadic and (len(operands) != len(self.inputs)
                                  or any(o is _MISSING for o in operands)):
            raise AttrError(f"{self.name}() takes tensor operands {list(self.inputs)}, "
                            f"got {len([o for o in operands if o is not _MISSING])}",
                            op=self.name, loc=capture_loc())
        return operands, attrs

    def __call__(self, *args, **kwargs):
        from ..frontend.tracer import emit
        operands, attrs = self.bind(args, kwargs)
        return emit(self, operands, attrs)

    def __repr__(self) -> str:
        return f"<graphc op {self.name} ({self.kind})>"


_MISSING = object()


def _is_attr_value(v) -> bool:
    from ..frontend.tensor import Tensor
    return not isinstance(v, (Tensor, np.ndarray, list, tuple)) or (
        isinstance(v, (list, tuple)) and all(isinstance(x, (int, Sym)) for x in v))


_LOWERINGS = {"elementwise": ("lower", "lower_index"), "movement": ("lower_index",),
              "reduction": ("lower_row",), "broadcast": ("lower", "lower_index"),
              "contraction": (), "opaque": ()}


def register_op(name: str, *, kind: str, infer: Callable | None = None,
                decompose: Callable | None = None, dtypes: str | tuple | None = None,
                out_dtype: str | None = None, lower: Callable | None = None,
                lower_index: Callable | None = None, lower_row: Callable | None = None,
                **extra):
    """Register a NumPy reference function as a graphc op and return its :class:`OpDef`.

    ``infer(types, attrs) -> TensorType`` may canonicalise ``attrs`` in place; raise
    :class:`ShapeError` / :class:`DTypeError` with a plain message (node, op, shapes and
    the user's line are added by the caller). Elementwise ops may omit ``infer``: operands
    broadcast NumPy-style and must share one dtype (``dtypes="float"`` restricts it,
    ``out_dtype`` overrides the result's).

    What the compiled backends run is declared here too, once for all of them (the loop
    IR, graphc/lower/loopir.py, is what every renderer takes):

    * ``lower(node, *values) -> Expr``: an elementwise op's value from its operands'
      values (``node.attrs``, ``node.type.dtype`` are there to read);
    * ``lower_index(node, idx, operand) -> Expr``: a movement op's (or a generator's)
      value at output index ``idx``, where ``operand(k, idx2)`` is operand k's value;
    * ``lower_row(ctx) -> [Stmt]``: a reduction's statements for one row
      (graphc/lower/kernels.py, :class:`RowContext`);
    * or ``decompose=`` into ops that have one.

    An elementwise, movement or reduction op with none of them cannot run on numba or
    cupy: that is a :class:`RegistrationError` now, not an error at its first compile.
    (``kind="opaque"`` ops run natively or as their NumPy reference on every backend.)
    """
    if kind not in KINDS:
        raise RegistrationError(f"op kind must be one of {KINDS}, got {kind!r}",
                                op=name, loc=capture_loc())
    given = {k: f for k, f in (("lower", lower), ("lower_index", lower_index),
                               ("lower_row", lower_row)) if f is not None}
    if len(given) > 1:
        raise RegistrationError(f"op {name}: give one lowering, not {' and '.join(given)}",
                                op=name, loc=capture_loc())
    for k, f in given.items():
        if k not in _LOWERINGS[kind]:
            raise RegistrationError(
                f"op {name}: a {kind} op is lowered by "
                f"{' or '.join(_LOWERINGS[kind]) or 'its backend templates'}, not {k}=",
                op=name, loc=capture_loc())
        if not callable(f):
            raise RegistrationError(f"op {name}: {k}= must be a function", op=name,
                                    loc=capture_loc())
    if not given and decompose is None and _LOWERINGS[kind]:
        raise RegistrationError(
            f"op {name}: {kind} ops need a loop-IR lowering for the compiled backends: "
            f"{' or '.join(k + '=' for k in _LOWERINGS[kind])}, or decompose= (see "
            "docs/adding_an_op.md); kind='opaque' runs its NumPy reference instead",
            op=name, loc=capture_loc())

    def deco(fn: Callable) -> OpDef:
        sig = inspect.signature(fn)
        inputs, attrs, variadic = [], {}, False
        for p in sig.parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                inputs.append(p.name)
            elif p.kind == p.VAR_POSITIONAL:
                inputs.append(p.name)
                variadic = True
            elif p.kind == p.KEYWORD_ONLY and not p.name.startswith("_"):
                # ``_name`` keyword parameters are run-time context, not attributes.
                attrs[p.name] = _REQUIRED if p.default is p.empty else p.default
        inf = infer
        if inf is None:
            if kind != "elementwise":
                raise RegistrationError(f"op {name}: a {kind} op needs an infer function",
                                        op=name, loc=capture_loc())
            inf = elementwise_infer(dtypes=dtypes, out_dtype=out_dtype)
        op = OpDef(name=name, kind=kind, reference=fn, infer=inf, inputs=tuple(inputs),
                   variadic=variadic, attrs=attrs, decompose=decompose,
                   doc=inspect.getdoc(fn) or "", extra=extra, lower=lower,
                   lower_index=lower_index, lower_row=lower_row)
        if lower is not None:
            _probe_lowering(op)
        if name in _REGISTRY:
            raise RegistrationError(f"op {name!r} is already registered", op=name,
                                    loc=capture_loc())
        _REGISTRY[name] = op
        op.__doc__ = op.doc
        return op

    return deco


def _probe_lowering(op: OpDef) -> None:
    """Lower an elementwise op once on symbolic operands (when every attribute has a
    default), so a lowering that calls a function the loop IR lacks, or takes the wrong
    number of operands, fails at registration, naming the op."""
    from ..lower import loopir as L
    if op.variadic or any(v is _REQUIRED for v in op.attrs.values()):
        return

    class Probe:
        name, loc = f"<probe of {op.name}>", None
        attrs = dict(op.attrs)
        type = TensorType((), "float32")
    try:
        e = op.lower(Probe, *(L.Var(f"x{k}") for k in range(len(op.inputs))))
    except (KeyError, TypeError, ValueError) as err:
        raise RegistrationError(f"op {op.name}: its lower= fails on {len(op.inputs)} "
                                f"operands: {err}", op=op.name, loc=capture_loc()) from None
    if not isinstance(e, L.Expr):
        raise RegistrationError(f"op {op.name}: lower= must return a loop-IR expression, "
                                f"got {type(e).__name__}", op=op.name, loc=capture_loc())
    for n in L.walk(e):
        bad = (isinstance(n, L.Call) and n.fn not in L.FUNCTIONS) or (
            isinstance(n, L.Bin) and n.op not in L.BIN_OPS)
        if bad:
            raise RegistrationError(
                f"op {op.name}: lower= uses {getattr(n, 'fn', getattr(n, 'op', n))!r}, "
                f"which the loop IR does not have (graphc/lower/loopir.py: BIN_OPS, "
                f"FUNCTIONS)", op=op.name, loc=capture_loc())


def unregister_op(name: str) -> None:
    """Remove an op (for tests and plugins that register temporary ops)."""
    _REGISTRY.pop(name, None)


def get_op(name: str, loc=None) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownOpError(f"unknown op {name!r}; registered ops: "
                             f"{', '.join(sorted(_REGISTRY))}", op=name,
                             loc=loc if loc is not None else capture_loc()) from None


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


# ---------------------------------------------------------------------------------------
# Type-inference helpers shared by the op families.

def broadcast_shapes(*shapes):
    """NumPy broadcasting over int and symbolic dims. A symbol only matches itself or 1."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(rank):
        dims = [s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0]
        d = 1
        for x in dims:
            if x == 1:
                continue
            if d == 1:
                d = x
            elif x != d:
                raise ShapeError(
                    "shapes " + " and ".join("[" + ",".join(map(str, s)) + "]" for s in shapes)
                    + f" do not broadcast: dim {k - rank} is {d} in one and {x} in another")
        out.append(d)
    return tuple(out)


def broadcasts_to(shape, target) -> bool:
    """Whether ``shape`` broadcasts to ``target`` without enlarging it."""
    try:
        return broadcast_shapes(shape, target) == tuple(target)
    except ShapeError:
        return False


def same_dtype(types, what: str = "operands") -> str:
    dts = {t.dtype for t in types}
    if len(dts) > 1:
        raise DTypeError(f"{what} have different dtypes "
                         f"({', '.join(t.dtype for t in types)}); cast one explicitly")
    return types[0].dtype


def require_float(t: TensorType, what: str = "operand") -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"{what} must be float32 or float64, got {t.dtype}")


def elementwise_infer(dtypes=None, out_dtype=None):
    def infer(types, attrs):
        if types:
            dt = same_dtype(types)
            if dtypes == "float":
                require_float(types[0])
            elif isinstance(dtypes, tuple) and dt not in dtypes:
                raise DTypeError(f"dtype {dt} not supported; expected one of {dtypes}")
            shape = broadcast_shapes(*(t.shape for t in types))
        else:
            raise ShapeError("an elementwise op needs at least one operand")
        return TensorType(shape, out_dtype or dt)
    return infer


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise AttrError(f"{what} must be an int, got {axis!r}")
    if not -rank <= axis < rank:
        raise AttrError(f"{what} {axis} is out of range for a rank-{rank} tensor")
    return int(axis) % rank if rank else 0


def norm_axes(axis, rank: int) -> tuple[int, ...]:
    """None -> all axes; int or tuple -> sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(rank))
    if isinstance(axis, (list, tuple)):
        axes = tuple(sorted(norm_axis(a, rank) for a in axis))
        if len(set(axes)) != len(axes):
            raise AttrError(f"repeated axis in {axis}")
        return axes
    return (norm_axis(axis, rank),)


def wrap_error(err: GraphcError, *, op: str, node: str, shapes, loc) -> GraphcError:
    """Re-raise a plain inference error with the node, op, shapes and source line."""
    return type(err)(err.message, op=op, node=node, shapes=shapes, loc=loc)


def build_node(graph, op: OpDef, input_ids, attrs: dict, loc=None):
    """Infer the type of ``op(inputs, attrs)`` and add the node to ``graph``."""
    full = {}
    for k, default in op.attrs.items():
        if k in attrs:
            full[k] = attrs[k]
        elif default is _REQUIRED:
            raise AttrError(f"{op.name}() requires attribute {k!r}", op=op.name,
                            node=f"%{graph._next_id}", loc=loc)
        else:
            full[k] = default
    unknown = set(attrs) - set(op.attrs)
    if unknown:
        raise AttrError(f"{op.name}() got unknown attributes {sorted(unknown)}", op=op.name,
                        node=f"%{graph._next_id}", loc=loc)
    types = [graph.nodes[i].type for i in input_ids]
    try:
        t = op.infer(types, full)
    except GraphcError as e:
        if e.loc is not None:
            raise
        raise wrap_error(e, op=op.name, node=f"%{graph._next_id}", shapes=types,
                         loc=loc) from None
    return graph.add_node(op.name, input_ids, full, t, loc)
