"""``from_onnx``: an ONNX model -> a graphc Graph.

Each node is translated by the function the table (``table.py``) gives for its op
type, which calls graphc's op functions; graphc's builder records the nodes with the
ONNX node as their source location. Shape arithmetic is evaluated at import into
(symbolic) dims (``context.py``)."""
from __future__ import annotations

import os
import re

import numpy as np

from ...errors import GraphcError
from ...ir.dims import Sym
from ...ir.graph import Graph
from ...ir.types import TensorType
from ..tracer import Builder, building
from .context import NodeCtx, Val, Values, known_of
from .dtypes import graphc_dtype
from .errors import NeedsValueError, OnnxImportError, UnsupportedOpError
from .loc import OnnxLoc
from .table import load_families

DEFAULT_DOMAINS = ("", "ai.onnx")
OPSET_RANGE = (13, 23)       # what is tested; newer opsets of the same ops are accepted


def _load(model_or_path):
    import onnx
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, "<onnx model>"
    if isinstance(model_or_path, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(model_or_path)), "<onnx model bytes>"
        except Exception as e:   # protobuf's DecodeError
            raise OnnxImportError(f"from_onnx(): the bytes are not an ONNX model: "
                                  f"{type(e).__name__}: {e}") from None
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        if not os.path.exists(path):
            raise OnnxImportError(f"from_onnx(): no such file {path!r}")
        try:
            return onnx.load(path, load_external_data=True), path
        except Exception as e:   # a truncated file, missing external data ...
            raise OnnxImportError(f"from_onnx(): cannot load {path!r}: "
                                  f"{type(e).__name__}: {e}") from None
    raise OnnxImportError(f"from_onnx() takes an onnx.ModelProto, a path or bytes, got "
                          f"{type(model_or_path).__name__}")


def _opset(model) -> int:
    for o in model.opset_import:
        if o.domain in DEFAULT_DOMAINS:
            return int(o.version)
    return 1 if not model.opset_import else OPSET_RANGE[1]


def _node_name(node, k: int) -> str:
    return node.name or f"{node.op_type}_{k}"


def check_supported(model, table=None) -> None:
    """Raise one UnsupportedOpError listing every node graphc cannot translate."""
    table = table if table is not None else load_families()
    opset = _opset(model)
    versions = {o.domain: o.version for o in model.opset_import}
    bad: dict = {}
    for k, node in enumerate(model.graph.node):
        if node.domain in DEFAULT_DOMAINS and node.op_type in table:
            continue
        dom = node.domain or "ai.onnx"
        key = (dom, node.op_type, versions.get(node.domain, opset))
        bad.setdefault(key, []).append(_node_name(node, k))
    if not bad:
        return
    lines = []
    total = 0
    for (dom, op, ver), names in sorted(bad.items()):
        total += len(names)
        shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
        lines.append(f"  {op} (domain {dom}, opset {ver}): {len(names)} node"
                     f"{'s' if len(names) > 1 else ''}: {shown}")
    raise UnsupportedOpError(
        f"the ONNX model {model.graph.name!r} uses {len(bad)} op type"
        f"{'s' if len(bad) > 1 else ''} graphc does not translate ({total} node"
        f"{'s' if total > 1 else ''}):\n" + "\n".join(lines),
        [(d, o, v, n) for (d, o, v), n in sorted(bad.items())])


_IDENT = re.compile(r"[^0-9A-Za-z_]")


def symbol_name(name: str) -> str:
    s = _IDENT.sub("_", name)
    if not s or not (s[0].isalpha() or s[0] == "_"):
        s = "d_" + s
    return s


def _dims_of(vi, dims: dict, input_shapes: dict) -> tuple:
    name = vi.name
    if name in input_shapes:
        return tuple(int(d) for d in input_shapes[name])
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        raise OnnxImportError(f"graph input {name!r} has no shape in the model; graphc "
                              f"needs its rank (dims may be named: dim_param)")
    out = []
    for k, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
            continue
        param = d.dim_param if d.HasField("dim_param") and d.dim_param else None
        sym = symbol_name(param) if param else symbol_name(f"{name}_{k}")
        for key in (param, sym):
            if key is not None and key in dims:
                out.append(int(dims[key]))
                break
        else:
            out.append(Sym.of(sym))
    return tuple(out)


def _attrs(node) -> dict:
    from onnx import helper, numpy_helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if a.type == a.TENSOR:
            v = numpy_helper.to_array(v)
        elif isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode("utf-8", "replace") for x in v]
        out[a.name] = v
    return out


def array_of(tensor_proto, what: str):
    from onnx import numpy_helper
    dt = graphc_dtype(tensor_proto.data_type, what)
    return known_of(numpy_helper.to_array(tensor_proto), dt)


def from_onnx(model_or_path, dims=None, *, values=None, name=None, _input_shapes=None,
              _widen=False) -> Graph:
    """Translate an ONNX model into a graphc Graph (see docs/onnx.md).

    ``model_or_path``: an ``onnx.ModelProto``, a path (external data next to it is loaded)
    or the serialized bytes. Graph inputs become the Graph's inputs in ONNX order;
    initializers are constants. A named dynamic dim (``dim_param`` "batch", "seq")
    becomes a symbol, so one compile serves every size; ``dims={"seq": 512}`` pins one
    (a dim with neither value nor name becomes the symbol ``<input>_<axis>``).
    ``values={input name: array}`` fixes graph inputs whose value an op needs at import
    (a Reshape's shape that the model feeds as an input); they are no longer inputs.

    Raises UnsupportedOpError (every unsupported node, before anything is built); any
    other failure is a GraphcError naming the ONNX node."""
    model, where = _load(model_or_path)
    if model.functions:
        from onnx import inliner
        model = inliner.inline_local_functions(model)
    table = load_families()
    check_supported(model, table)
    dims = dict(dims or {})
    values = dict(values or {})
    input_shapes = dict(_input_shapes or {})
    g = model.graph
    opset = _opset(model)
    graph = Graph(name or symbol_name(g.name or "onnx_model"))
    builder = Builder(graph)
    vals = Values(builder)
    init_names = {t.name for t in g.initializer}
    where_label = where if where.startswith("<") else os.path.basename(where)

    in_loc = OnnxLoc(where_label, 0, "graph inputs", "graph inputs", "(graph inputs)")
    builder.loc = in_loc
    named = set()
    for vi in g.input:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            for k, d in enumerate(vi.type.tensor_type.shape.dim):
                if not d.HasField("dim_value"):
                    p = d.dim_param if d.HasField("dim_param") and d.dim_param else None
                    named |= {p, symbol_name(p)} if p else {symbol_name(f"{vi.name}_{k}")}
    unknown = sorted(k for k in dims if k not in named)
    if unknown:
        raise OnnxImportError(f"from_onnx(dims=...): {', '.join(map(repr, unknown))} is not a "
                              f"dynamic dim of any graph input; the model's are "
                              f"{sorted(n for n in named if n) or 'none'}", loc=in_loc)
    unknown_values = sorted(k for k in values if k not in {vi.name for vi in g.input})
    if unknown_values:
        raise OnnxImportError(f"from_onnx(values=...): {', '.join(map(repr, unknown_values))} "
                              f"is not a graph input", loc=in_loc)
    input_names = []
    for vi in g.input:
        if vi.name in init_names:
            continue          # IR < 4: initializers are listed as inputs too
        if vi.name in values:
            tt = vi.type.tensor_type
            dt = graphc_dtype(tt.elem_type, f"graph input {vi.name!r}", widen=_widen)
            vals.set(vi.name, known_of(np.asarray(values[vi.name]), dt))
            continue
        if not vi.type.HasField("tensor_type"):
            raise OnnxImportError(f"graph input {vi.name!r} is not a tensor (a sequence, "
                                  f"map or optional); graphc takes tensors", loc=in_loc)
        dt = graphc_dtype(vi.type.tensor_type.elem_type, f"graph input {vi.name!r}",
                          widen=_widen)
        try:
            shape = _dims_of(vi, dims, input_shapes)
        except OnnxImportError as e:
            raise OnnxImportError(e.message, loc=in_loc) from None
        node = graph.add_input(vi.name, TensorType(shape, dt), in_loc)
        t = builder.wrap(node.id)
        vals.set(vi.name, Val(tensor=t, graph_input=vi.name))
        input_names.append(vi.name)
    for tp in g.initializer:
        if tp.name in values:
            continue
        try:
            vals.set(tp.name, array_of(tp, f"initializer {tp.name!r}"))
        except GraphcError as e:
            raise type(e)(e.message, loc=in_loc) from None

    with building(builder):
        for k, node in enumerate(g.node):
            _translate(node, k, table, vals, opset, where_label, builder)

    out_loc = OnnxLoc(where_label, len(g.node), "graph outputs", "graph outputs",
                      "(graph outputs)")
    builder.loc = out_loc
    outs = []
    with building(builder):
        for vi in g.output:
            if vi.name not in vals.table:
                raise OnnxImportError(f"graph output {vi.name!r} is made by no node",
                                      loc=out_loc)
            outs.append(vals.tensor(vi.name).id)
    graph.outputs = outs
    graph.meta = {"single_output": len(outs) == 1,
                  "onnx": {"inputs": input_names, "outputs": [vi.name for vi in g.output],
                           "opset": opset, "model": where}}
    return graph


def _translate(node, k, table, vals: Values, opset, where, builder) -> None:
    loc = OnnxLoc(where, k, f"{node.op_type} {_node_name(node, k)!r}", node.op_type,
                  _node_name(node, k))
    builder.loc = loc
    ctx = NodeCtx(node, vals, opset, loc)
    try:
        for i, name in enumerate(node.input):
            if name and name not in vals.table:
                raise ctx.fail(f"input {i} {name!r} is made by no earlier node, initializer "
                               f"or graph input")
        ctx.attrs = _attrs(node)
        outs = table[node.op_type](ctx)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        sources = frozenset()
        for name in node.input:
            if name:
                v = vals.get(name)
                sources |= v.sources | ({v.graph_input} if v.graph_input else set())
        for i, name in enumerate(node.output):
            if not name:
                continue
            if i >= len(outs) or outs[i] is None:
                raise ctx.fail(f"output {i} ({name!r}) is not supported by graphc's "
                               f"translation of {node.op_type}")
            vals.set(name, outs[i])
            if vals.get(name).tensor is not None and vals.get(name).graph_input is None:
                vals.get(name).sources = sources
    except (NeedsValueError, UnsupportedOpError):
        raise
    except GraphcError as e:
        if isinstance(e.loc, OnnxLoc):
            raise
        try:
            err = type(e)(e.message, op=e.op, node=e.node, shapes=e.shapes, loc=loc)
        except TypeError:
            err = OnnxImportError(str(e), op=node.op_type, loc=loc)
        raise err from None
    except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError,
            OverflowError, AttributeError, NotImplementedError) as e:
        raise OnnxImportError(f"{node.op_type} node {loc.node_name!r} cannot be translated: "
                              f"{type(e).__name__}: {e}", op=node.op_type, loc=loc) from e
