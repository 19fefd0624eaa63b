"""Running a lowered Program on the CPU: one arena per set of symbol sizes (from the
memory plan, made once and kept), BLAS for GEMMs, Numba kernels for the rest."""
from __future__ import annotations

import numpy as np

from graphc.errors import InputError
from graphc.ir.dims import evaluate
from graphc.lower.program import AttentionStep, GemmStep, KernelStep, LibraryStep
from graphc.runtime.executable import Executable
from graphc.runtime.interpreter import run_graph

ATTENTION_BLOCK = 128   # query rows per block: the score block is [heads, 128, T]


def _apply_chain(arr, chain, bindings):
    for op, arg in chain:
        if op == "reshape":
            arr = arr.reshape(tuple(evaluate(d, bindings) for d in arg))
        else:
            arr = arr.transpose(arg)
    return arr


def _invert_chain(arr, chain, anchor_shape, bindings):
    """A view of ``arr`` (the group output) in the anchor's shape, or None when the store
    chain cannot be undone without a copy."""
    shapes = [tuple(evaluate(d, bindings) for d in anchor_shape)]
    for op, arg in chain:
        if op == "reshape":
            shapes.append(tuple(evaluate(d, bindings) for d in arg))
        else:
            shapes.append(tuple(shapes[-1][a] for a in arg))
    view = arr
    for (op, arg), before in zip(reversed(chain), reversed(shapes[:-1])):
        if op == "reshape":
            view = view.reshape(before)
        else:
            view = view.transpose(np.argsort(arg))
    return view if np.shares_memory(view, arr) else None


class _Sized:
    """Everything that depends on the symbol sizes: arena views, scratch, size args."""

    def __init__(self, exe, bindings):
        g = exe.graph
        self.bindings = bindings
        plan = g.meta["memory"].for_bindings(bindings)
        self.plan = plan
        self.arena = np.empty(max(plan.arena_bytes, 1), dtype=np.uint8)
        self.views = {}
        for nid, off in plan.offsets.items():
            t = g.nodes[nid].type
            shape = t.concrete_shape(bindings)
            self.views[nid] = np.ndarray(shape, t.np_dtype, buffer=self.arena, offset=off)
        self.scratch = {}
        for step in exe.program.steps:
            if isinstance(step, KernelStep) and step.epilogue is not None:
                shape = tuple(evaluate(d, bindings) for d in step.acc_shape)
                self.scratch[step.node] = np.empty(shape, step.acc_dtype)
            if isinstance(step, GemmStep) and step.epilogue is not None and not step.in_place:
                shape = tuple(evaluate(d, bindings) for d in step.acc_shape)
                self.scratch[step.node] = np.empty(shape, step.acc_dtype)
            if isinstance(step, AttentionStep):
                shape = tuple(evaluate(d, bindings) for d in step.acc_shape)
                batch = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
                T = evaluate(step.keys, bindings)
                rows = min(ATTENTION_BLOCK, shape[-2])
                # scores in the attention's dtype (float32 scores would cap a float64
                # graph at float32 precision)
                self.scratch[("scores", step.node)] = np.empty(batch * rows * max(T, 1),
                                                               step.acc_dtype)
                self.scratch[("inv", step.node)] = np.empty(batch * rows, step.acc_dtype)
                if step.epilogue is not None:
                    self.scratch[step.node] = np.empty(shape, step.acc_dtype)
        self.size_args = {}
        for k in exe.kernels.values():
            self.size_args[k.name] = tuple(int(bindings[s]) for s in k.sizes)


class NumbaExecutable(Executable):
    backend = "numba"

    def __init__(self, graph, program, kernels, functions, attention_softmax):
        super().__init__(graph)
        self.program = program
        self.kernels = kernels            # name -> loop-IR Kernel
        self.functions = functions        # name -> compiled function
        self.attention_softmax = attention_softmax  # scores dtype -> compiled softmax
        self._sized: dict[tuple, _Sized] = {}
        self.constants = {nid: np.ascontiguousarray(v) for nid, v in graph.constants.items()}
        self._embedding_checks = _embedding_checks(graph)
        self._key_checks = _key_checks(graph)
        self.library = {}                 # LibraryStep node -> native run(out, ops)

    def sized(self, bindings) -> _Sized:
        key = tuple(sorted(bindings.items()))
        s = self._sized.get(key)
        if s is None:
            for check in self._key_checks:
                check(bindings)
            s = self._sized[key] = _Sized(self, dict(bindings))
        return s

    def run(self, arrays, bindings):
        g = self.graph
        sz = self.sized(bindings)
        vals = dict(self.constants)
        for nid, a in zip(g.inputs, arrays):
            vals[nid] = np.ascontiguousarray(a)
        for nid, table_rows in self._embedding_checks:
            ids = vals[nid]
            if ids.size and (ids.min() < 0 or ids.max() >= table_rows):
                bad = ids[(ids < 0) | (ids >= table_rows)].ravel()[0]
                raise InputError(f"input '{g.nodes[nid].attrs['name']}' holds id {int(bad)}, "
                                 f"out of range for a table of {table_rows} rows",
                                 node=g.nodes[nid].name)
        outputs = set(g.outputs)
        for step in self.program.steps:
            nid = step.node
            node = g.nodes[nid]
            if nid in sz.plan.views and nid not in outputs and nid not in sz.views:
                vals[nid] = vals[sz.plan.views[nid]].reshape(
                    node.type.concrete_shape(bindings))
                continue
            out = sz.views.get(nid)
            if out is None:
                out = np.empty(node.type.concrete_shape(bindings), node.type.np_dtype)
            ops = [vals[o] for o in step.operands]
            if isinstance(step, KernelStep):
                acc = sz.scratch.get(nid) if step.epilogue is not None else None
                self._kernel(step.kernel, ops, out, acc, sz)
                if step.epilogue is not None:
                    self._kernel(step.epilogue, ops, out, acc, sz)
            elif isinstance(step, GemmStep):
                a = _apply_chain(ops[step.a.operand], step.a.chain, bindings)
                b = _apply_chain(ops[step.b.operand], step.b.chain, bindings)
                if step.epilogue is None:
                    np.matmul(a, b, out=out)
                else:
                    acc = out if step.in_place else sz.scratch[nid]
                    np.matmul(a, b, out=acc)
                    self._kernel(step.epilogue, ops, out, acc, sz)
            elif isinstance(step, AttentionStep):
                self._attention(step, ops, out, sz)
            elif isinstance(step, LibraryStep):
                native = self.library.get(nid)        # library.py: a native kernel
                if native is not None:
                    native(out, ops)
                else:                                 # the op's NumPy reference
                    out[...] = run_graph(step.body, ops, bindings)[0]
            vals[nid] = out
        return [vals[o] for o in g.outputs]

    def _kernel(self, kernel, ops, out, acc, sz):
        args = []
        for b in kernel.buffers:
            if b.name == "out":
                a = out
            elif b.name == "acc":
                a = acc
            else:
                a = ops[int(b.name[2:])]
            args.append(a.reshape(1) if a.ndim == 0 else a)
        self.functions[kernel.name](*args, *sz.size_args[kernel.name])

    def _attention(self, step, ops, out, sz):
        bindings = sz.bindings
        q = _apply_chain(ops[step.q.operand], step.q.chain, bindings)
        k = _apply_chain(ops[step.k.operand], step.k.chain, bindings)
        v = _apply_chain(ops[step.v.operand], step.v.chain, bindings)
        S, T = q.shape[-2], k.shape[-2]
        batch = q.shape[:-2]
        B = int(np.prod(batch)) if batch else 1
        q = q.reshape((B,) + q.shape[-2:])
        kT = k.reshape((B,) + k.shape[-2:]).transpose(0, 2, 1)
        v = v.reshape((B,) + v.shape[-2:])
        if step.epilogue is None:
            o = _invert_chain(out, step.out_chain, step.acc_shape, bindings)
            if o is None:
                o = sz.scratch.setdefault(step.node, np.empty(
                    tuple(evaluate(d, bindings) for d in step.acc_shape), step.acc_dtype))
        else:
            o = sz.scratch[step.node]
        o3 = o.reshape((B, S, o.shape[-1]))
        if not np.shares_memory(o3, o):
            raise AssertionError("attention output view must not copy")
        scores = sz.scratch[("scores", step.node)]
        softmax = self.attention_softmax[str(scores.dtype)]
        inv = sz.scratch[("inv", step.node)]
        diag = T - S
        rows = min(ATTENTION_BLOCK, S)
        for r0 in range(0, S, rows):
            r1 = min(S, r0 + rows)
            kend = T if not step.causal else max(0, min(T, r1 + diag))
            blk = np.ndarray((B, r1 - r0, kend), scores.dtype, buffer=scores)
            inv_blk = np.ndarray((B, r1 - r0), inv.dtype, buffer=inv)
            np.matmul(q[:, r0:r1], kT[:, :, :kend], out=blk)
            softmax(blk, inv_blk, float(step.scale), bool(step.causal), r0, diag)
            np.matmul(blk, v[:, :kend], out=o3[:, r0:r1])
            o3[:, r0:r1] *= inv_blk[:, :, None]
        if step.epilogue is not None:
            self._kernel(step.epilogue, ops, out, o, sz)
        elif not np.shares_memory(o, out):
            out[...] = _apply_chain(o, step.out_chain, bindings)


def _key_checks(graph):
    """Checks of the symbol sizes that the reference backend makes when it runs the op:
    every (causal) query must see a key. A kernel would silently give NaN rows."""
    checks = []
    for node in graph.nodes.values():
        if node.op != "fused":
            continue
        for b in node.attrs["body"].nodes.values():
            if b.op == "causal_mask":
                checks.append(_rows_cols_check(
                    b, b.attrs["rows"], b.attrs["cols"], True, False,
                    "causal_mask(): {S} query rows but only {T} key columns"))
            elif b.op == "attention":
                q, k = (node.attrs["body"].nodes[i] for i in b.inputs[:2])
                checks.append(_rows_cols_check(
                    b, q.type.shape[-2], k.type.shape[-2], b.attrs["causal"], True,
                    "attention(): {S} " + ("causal " if b.attrs["causal"] else "")
                    + "queries but {T} keys; every query must see at least one key"))
    return [c for c in checks if c is not None]


def _rows_cols_check(node, rows, cols, causal: bool, need_keys: bool, message: str):
    if isinstance(rows, int) and isinstance(cols, int):
        return None  # checked when the graph was traced

    def check(bindings):
        S, T = evaluate(rows, bindings), evaluate(cols, bindings)
        if (need_keys and T == 0) or (causal and S > T):
            raise InputError(message.format(S=S, T=T), op=node.op, node=node.name,
                             loc=node.loc)
    return check


def _embedding_checks(graph):
    """(input node, table rows) for graph inputs used as embedding ids: checked before
    each call so an id out of range is an error, not a read past the table."""
    checks = []
    for node in graph.nodes.values():
        if node.op != "fused":
            continue
        body = node.attrs["body"]
        for b in body.nodes.values():
            if b.op != "embedding":
                continue
            ids = body.nodes[b.inputs[1]]
            table = body.nodes[b.inputs[0]]
            if ids.id in body.inputs and table.id in body.inputs:
                outer = node.inputs[body.inputs.index(ids.id)]
                rows = table.type.shape[0]
                if graph.nodes[outer].op == "input" and isinstance(rows, int):
                    checks.append((outer, rows))
                    continue
            raise_unchecked(b)
    return checks


def raise_unchecked(node):
    from graphc.errors import BackendError
    raise BackendError("the numba backend checks embedding ids only when they are a graph "
                       "input indexing a weight table", op="embedding", node=node.name,
                       loc=node.loc)
