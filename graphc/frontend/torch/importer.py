"""``from_torch``: a torch.nn.Module -> torch.export -> core ATen -> a graphc Graph.

Each FX node is translated by the function the table (``table.py``) gives for its ATen
op; graphc's builder records the nodes with the FX node's stack trace (the user's PyTorch
line) as their location. Symbolic sizes (SymInts) are evaluated at import into graphc
symbolic dims; ``torch.export.Dim``s become graphc symbols of the same name."""
from __future__ import annotations

import operator

import numpy as np

from ...errors import GraphcError, ShapeError
from ...ir.dims import Sym
from ...ir.graph import Graph
from ...ir.types import TensorType
from ..tensor import Tensor
from ..tracer import Builder, building
from .context import NodeCtx, Symbols, graphc_dtype
from .errors import TorchImportError, UnsupportedOpError
from .loc import TorchLoc, loc_of
from .table import load_families

# FX nodes that check or assert and produce nothing graphc needs.
SKIP = {"aten._assert_tensor_metadata.default", "aten._assert_scalar.default",
        "aten.sym_constrain_range_for_size.default", "aten.sym_constrain_range.default",
        "aten._assert_async.msg", "aten._assert_async.default",
        "aten._functional_assert_async.msg", "aten._functional_sym_constrain_range.default"}


def op_name(target) -> str:
    if getattr(target, "__module__", None) == "_operator" or target in vars(operator).values():
        return f"operator.{target.__name__}"
    return str(target)


def decomposition_table():
    """Core ATen decompositions, less scaled dot-product attention (translated whole,
    so graphc's fused attention sees it)."""
    import torch
    table = torch.export.default_decompositions()
    for op in list(table):
        if "scaled_dot_product" in str(op):
            del table[op]
    return table


def export(module, example_args, dynamic_shapes=None, kwargs=None, strict=False):
    import warnings

    import torch
    try:
        with warnings.catch_warnings():     # torch's own deprecation inside its deepcopy
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`",
                                    category=FutureWarning)
            ep = torch.export.export(module, tuple(example_args), kwargs=kwargs,
                                     dynamic_shapes=dynamic_shapes, strict=strict)
            return ep.run_decompositions(decomposition_table())
    except GraphcError:
        raise
    except Exception as e:    # torch's own message names the line and the constraint
        hint = ""
        if "Cache" in str(e) and "not a known type" in str(e):
            hint = ("\n(the model returns a kv cache object: pass kwargs={'use_cache': "
                    "False} to translate the forward without one; torch.compile(model, "
                    "backend='graphc') takes the cache as it is)")
        raise TorchImportError(f"torch.export could not export "
                               f"{type(module).__name__}: {type(e).__name__}: {e}{hint}") \
            from None


def from_torch(module, example_args, dynamic_shapes=None, kwargs=None, *, name=None,
               strict=False) -> Graph:
    """Translate a ``torch.nn.Module`` into a graphc Graph (see docs/torch.md).

    ``torch.export.export(module, example_args, kwargs=kwargs, dynamic_shapes=...)``, then
    the core ATen decompositions. The user inputs (tensors of args then kwargs) become the
    Graph's inputs in order; parameters and buffers become constants (shared with torch, no
    copy, where contiguous float32/float64). Each ``torch.export.Dim`` becomes a graphc
    symbol of its name (its range is in ``graph.meta["torch"]["dims"]``), so one compile
    serves every size. Raises UnsupportedOpError listing every ATen op graphc does not
    translate (with the user's lines) before anything is built; any other failure is a
    GraphcError naming the FX node and the user's line."""
    ep = export(module, example_args, dynamic_shapes, kwargs, strict)
    names = _dim_names(module, example_args, kwargs, dynamic_shapes)
    return from_exported_program(ep, name=name or type(module).__name__, dim_names=names)


def _dim_names(module, args, kwargs, dynamic_shapes):
    """[(input index, axis) -> Dim name] for the flattened user inputs, where the spec is a
    tuple / list / dict of per-tensor {axis: Dim} or (Dim, ...) specs."""
    if dynamic_shapes is None:
        return {}
    import inspect
    per_arg = []
    if isinstance(dynamic_shapes, dict):
        try:
            params = list(inspect.signature(module.forward).parameters)
        except (TypeError, ValueError):
            params = []
        ordered = params[:len(args)] + list((kwargs or {}).keys())
        per_arg = [dynamic_shapes.get(p) for p in ordered]
    else:
        per_arg = list(dynamic_shapes)
    out = {}
    for i, spec in enumerate(per_arg):
        items = spec.items() if isinstance(spec, dict) else \
            enumerate(spec) if isinstance(spec, (list, tuple)) else ()
        for axis, d in items:
            n = getattr(d, "__name__", None)
            if isinstance(n, str) and n.isidentifier():
                out[(i, int(axis))] = n
    return out


def tensor_array(t, what: str, loc=None) -> np.ndarray:
    """A torch tensor's data as a NumPy array: shared, not copied, where contiguous CPU
    float32 / float64 (or int / bool)."""
    import torch
    if isinstance(t, torch.nn.Parameter):
        t = t.data
    t = t.detach()
    graphc_dtype(t.dtype, what, loc)
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype in (torch.int8, torch.int16, torch.uint8):
        t = t.to(torch.int32)
    a = t.numpy() if t.is_contiguous() else np.ascontiguousarray(t.numpy())
    return a


def check_supported(gm, table, where: str = "the exported program") -> None:
    """Raise one UnsupportedOpError listing every FX node graphc cannot translate."""
    bad: dict = {}
    for n in gm.graph.nodes:
        if n.op != "call_function":
            if n.op in ("call_module", "call_method", "get_attr"):
                pass
            else:
                continue
        name = op_name(n.target) if n.op == "call_function" else f"{n.op} {n.target}"
        if name in table or name in SKIP or name == "operator.getitem" or _symbolic(n):
            continue
        if n.op == "get_attr":
            continue
        bad.setdefault(name, []).append(loc_of(n, name))
    if not bad:
        return
    lines, total = [], 0
    for op, locs in sorted(bad.items()):
        total += len(locs)
        shown = "; ".join(repr(l.fx_node) + (f" at {l.short}" if l.lineno else "")
                          + (f": {l.line}" if l.lineno and l.line else "")
                          for l in locs[:3]) + ("; ..." if len(locs) > 3 else "")
        lines.append(f"  {op}: {len(locs)} node{'s' if len(locs) > 1 else ''}: {shown}")
    raise UnsupportedOpError(
        f"{where} uses {len(bad)} ATen op{'s' if len(bad) > 1 else ''} graphc does not "
        f"translate ({total} node{'s' if total > 1 else ''}):\n" + "\n".join(lines),
        [("aten", op, None, [l.fx_node for l in locs]) for op, locs in sorted(bad.items())])


def _symbolic(n) -> bool:
    """A node whose value is a size (SymInt / int / SymBool): computed at import."""
    v = n.meta.get("val")
    import torch
    return isinstance(v, (torch.SymInt, torch.SymBool, torch.SymFloat)) or (
        n.op == "call_function" and isinstance(v, (int, bool)) and not isinstance(v, float)
        and op_name(n.target).startswith(("operator.", "aten.sym_")))


def from_exported_program(ep, name: str = "torch_model", dim_names=None) -> Graph:
    """Translate a (decomposed) ``torch.export.ExportedProgram`` into a Graph."""
    sig = ep.graph_signature
    consts = {}
    for ph, fqn in list(sig.inputs_to_parameters.items()) + list(
            sig.inputs_to_buffers.items()):
        consts[ph] = (fqn, ep.state_dict[fqn] if fqn in ep.state_dict else ep.constants[fqn])
    for ph, fqn in getattr(sig, "inputs_to_lifted_tensor_constants", {}).items():
        consts[ph] = (fqn, ep.constants[fqn])
    if getattr(sig, "buffers_to_mutate", None):
        raise TorchImportError(f"the model mutates buffers {sorted(sig.buffers_to_mutate.values())} "
                               f"in forward; graphc compiles pure functions")
    user_outputs = list(sig.user_outputs)
    return translate_graph(ep.graph_module, name, consts=consts, dim_names=dim_names or {},
                           user_outputs=user_outputs,
                           ranges={str(k): (v.lower, v.upper)
                                   for k, v in ep.range_constraints.items()})


# Symbols unified at most this many times in one translation (each a fresh start).
MAX_UNIFIED = 32


def translate_graph(gm, name, consts=None, dim_names=None, user_outputs=None, ranges=None,
                    where="the exported program") -> Graph:
    """The core: an FX graph of ATen ops -> a Graph. ``consts`` maps placeholder names to
    (qualified name, tensor) that become constants; other tensor placeholders become
    inputs; SymInt placeholders are sizes (found in the inputs' shapes).

    Where an op's operands differ only in that one dim is torch symbol ``a`` and the other
    ``b``, traced with the same size (dynamo gives each kv-cache tensor its own length
    symbol; torch's kernels check at run time that they agree), the two become one graphc
    symbol and the translation starts again: a call whose sizes differ there is then an
    InputError, as torch would raise."""
    aliases: dict = {}
    while True:
        try:
            return _translate_graph(gm, name, consts, dim_names, user_outputs, ranges, where,
                                    aliases)
        except ShapeError as e:
            pair = getattr(e, "_equal_pair", None)
            if pair is None or len(aliases) >= MAX_UNIFIED:
                raise
            a, b = (Symbols.root_in(aliases, x) for x in pair)
            if a == b:
                raise
            aliases[a] = b              # union: every name of a's class now reaches b


def _translate_graph(gm, name, consts, dim_names, user_outputs, ranges, where,
                     aliases) -> Graph:
    import torch
    table = load_families()
    check_supported(gm, table, where)
    consts = consts or {}
    graph = Graph(name)
    builder = Builder(graph)
    symbols = Symbols(ranges, aliases)
    env: dict = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    # name the symbols first: a Dim's name for the dims it sizes
    k_in = 0
    for n in placeholders:
        v = n.meta.get("val")
        if n.name in consts or not isinstance(v, torch.Tensor):
            continue
        for axis, d in enumerate(v.shape):
            expr = getattr(getattr(d, "node", None), "expr", None)
            if expr is not None and getattr(expr, "is_Symbol", False):
                symbols.name(expr.name, (dim_names or {}).get((k_in, axis), expr.name))
        k_in += 1
    input_names = []
    for n in placeholders:
        loc = TorchLoc("<torch>", 0, "", "placeholder", n.name)
        builder.loc = loc
        v = n.meta.get("val")
        if n.name in consts:
            fqn, t = consts[n.name]
            if not isinstance(t, torch.Tensor):
                env[n.name] = t
                continue
            arr = tensor_array(t, f"{fqn}", loc)
            env[n.name] = builder.wrap(builder.constant(arr, name=fqn))
        elif isinstance(v, torch.Tensor):
            dt = graphc_dtype(v.dtype, f"input {n.name!r}", loc)
            shape = tuple(symbols.dim(d, f"a dim of input {n.name!r}") for d in v.shape)
            for d in shape:
                if isinstance(d, Sym) and not (len(d.terms) == 1 and d.terms[0][1] == 1
                                               and len(d.terms[0][0]) == 1):
                    raise TorchImportError(f"input {n.name!r} has the dim {d}: graphc binds "
                                           f"each input dim to one symbol or a number",
                                           loc=loc)
            env[n.name] = builder.wrap(graph.add_input(n.name, TensorType(shape, dt), loc).id)
            input_names.append(n.name)
        elif isinstance(v, (torch.SymInt, int)):
            env[n.name] = symbols.dim(v, f"the size input {n.name!r}")
        else:
            env[n.name] = v
    with building(builder):
        for n in gm.graph.nodes:
            if n.op in ("placeholder", "output"):
                continue
            try:
                _translate(n, table, env, symbols, builder)
            except ShapeError as e:
                e._equal_pair = symbols.equal_pair(e)
                raise
        out_node = next(n for n in gm.graph.nodes if n.op == "output")
        outs = out_node.args[0]
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        loc = TorchLoc("<torch>", 0, "", "output", "output")
        builder.loc = loc
        out_ids, out_names = [], []
        for k, o in enumerate(outs):
            v = env.get(o.name) if isinstance(o, torch.fx.Node) else o
            if isinstance(v, Tensor):
                out_ids.append(v.id)
            elif v is None:
                raise TorchImportError(f"output {k} is None; graphc returns tensors", loc=loc)
            else:
                out_ids.append(_as_tensor(builder, v).id)
            out_names.append(o.name if isinstance(o, torch.fx.Node) else f"out{k}")
    graph.outputs = out_ids
    dims = {}
    for tname, gname in symbols.names.items():
        if ranges and tname in ranges:
            lo, hi = ranges[tname]
            dims[gname] = (int(lo), None if str(hi) in ("oo", "int_oo") else int(hi))
    graph.meta = {"single_output": len(out_ids) == 1,
                  "torch": {"inputs": input_names, "outputs": user_outputs or out_names,
                            "dims": dims}}
    # the ranges a max() / min() was decided by, checked at call time (dynamo guards its
    # own; only export's ranges are in ``dims``)
    relied = {g: dims[g] for g in (symbols.names.get(symbols.root(t)) for t in symbols.relied)
              if g in dims}
    if relied:
        graph.meta["dim_ranges"] = relied
    return graph


def _as_tensor(builder, v):
    import torch
    if isinstance(v, Sym):
        from ... import ops
        return ops.reshape(ops.arange(v, v + 1, dtype="int64"), shape=())
    if isinstance(v, torch.Tensor):
        return builder.wrap(builder.constant(tensor_array(v, "an output")))
    return builder.wrap(builder.scalar(v, "float32" if isinstance(v, float) else "int64"))


def _resolve(x, env):
    import torch
    if isinstance(x, torch.fx.Node):
        return env[x.name]
    if isinstance(x, (list, tuple)):
        return type(x)(_resolve(y, env) for y in x)
    if isinstance(x, dict):
        return {k: _resolve(y, env) for k, y in x.items()}
    return x


def _translate(n, table, env, symbols, builder) -> None:
    import torch
    name = op_name(n.target) if n.op == "call_function" else f"{n.op} {n.target}"
    loc = loc_of(n, name)
    builder.loc = loc
    if name in SKIP:
        env[n.name] = None
        return
    if n.op == "get_attr":
        obj = n.graph.owning_module
        for part in str(n.target).split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, torch.Tensor):
            raise TorchImportError(f"FX get_attr node {n.name!r} is a "
                                   f"{type(obj).__name__}, not a tensor", loc=loc)
        env[n.name] = builder.wrap(builder.constant(tensor_array(obj, str(n.target), loc),
                                                    name=str(n.target)))
        return
    ctx = NodeCtx(n, name, [], {}, loc, symbols, builder)
    try:
        if _symbolic(n):
            env[n.name] = symbols.dim(n.meta["val"], f"the size FX node {n.name!r}")
            return
        args, kwargs = _resolve(n.args, env), _resolve(n.kwargs, env)
        if name == "operator.getitem":
            seq, k = args
            if k >= len(seq):
                raise ctx.fail(f"output {k} of {n.args[0]} is not made by graphc's "
                               f"translation (it serves autograd)")
            env[n.name] = seq[k]
            return
        ctx.args, ctx.kwargs = list(args), dict(kwargs)
        env[n.name] = table[name](ctx)
    except UnsupportedOpError:
        raise
    except GraphcError as e:
        if isinstance(e.loc, TorchLoc):
            raise
        try:
            err = type(e)(e.message, op=e.op or name, node=e.node or n.name, shapes=e.shapes,
                          loc=loc)
        except TypeError:
            err = TorchImportError(str(e), op=name, node=n.name, loc=loc)
        raise err from None
    except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError,
            AttributeError, NotImplementedError) as e:
        shapes = [tuple(a.shape) for a in ctx.args if isinstance(a, Tensor)]
        raise TorchImportError(f"FX node {n.name!r} ({name}) cannot be translated: "
                               f"{type(e).__name__}: {e}", op=name, node=n.name,
                               shapes=shapes or None, loc=loc) from e
