"""Running a lowered Program: what every compiling backend shares.

:class:`ProgramExecutable` walks the Program's steps in schedule order over one arena per
set of symbol sizes (from the memory plan, made once and kept): views of the arena for
intermediates, fresh arrays for outputs, scratch for the steps that need it. A backend
subclass says how arrays are made (``xp``: NumPy, CuPy) and how a kernel, a GEMM, an
attention and a library op run. The checks a kernel cannot make itself (embedding ids in
range; the symbol sizes: checks.py) run here, before any kernel.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from collections import OrderedDict

import numpy as np

from ..errors import BackendError, InputError
from ..ir.dims import evaluate
from ..lower.program import AttentionStep, GemmStep, KernelStep, LibraryStep
from ..passes.views import chain_layout
from .executable import Executable
from .memory import available_bytes, check_fits, largest_tensor


def apply_chain(arr, chain, bindings):
    """``arr`` through a View's movement chain (reshape / transpose / slice)."""
    for op, arg in chain:
        if op == "reshape":
            arr = arr.reshape(tuple(evaluate(d, bindings) for d in arg))
        elif op == "transpose":
            arr = arr.transpose(arg)
        else:
            arr = arr[tuple(slice(evaluate(s, bindings), evaluate(e, bindings), st)
                            for s, e, st in zip(*arg))]
    return arr


def strided_layout(chain, shape, bindings):
    """(offset, shape, strides) in elements of a C-contiguous array of ``shape`` read
    through ``chain`` at these sizes (passes/views.py), or None when it is not one
    strided view (or the array is empty)."""
    if not chain or 0 in shape:
        return None
    ev = []
    for op, arg in chain:
        if op == "reshape":
            arg = tuple(evaluate(d, bindings) for d in arg)
        elif op == "slice":
            arg = tuple(tuple(evaluate(d, bindings) for d in row) if i < 2 else row
                        for i, row in enumerate(arg))
        ev.append((op, arg))
    layout = chain_layout(shape, ev)
    if layout is None:
        return None
    offset, axes = layout
    return offset, tuple(n for n, _ in axes), tuple(s for _, s in axes)


def invert_chain(arr, chain, anchor_shape, bindings, shares_memory=np.shares_memory):
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
    return view if shares_memory(view, arr) else None


class Sized:
    """Everything that depends on the symbol sizes: arena views, scratch, size args."""

    def __init__(self, exe, bindings):
        g = exe.graph
        self.bindings = bindings
        plan = g.meta["memory"].for_bindings(bindings)
        self.plan = plan
        self.arena = exe.empty((max(plan.arena_bytes, 1),), np.uint8)
        self.views = {}
        for nid, off in plan.offsets.items():
            t = g.nodes[nid].type
            self.views[nid] = exe.arena_view(self.arena, t.concrete_shape(bindings),
                                             t.np_dtype, off)
        self.scratch = {}
        for step in exe.program.steps:
            acc_shape = tuple(evaluate(d, bindings) for d in getattr(step, "acc_shape", ()))
            if isinstance(step, KernelStep) and step.epilogue is not None:
                self.scratch[step.node] = exe.empty(acc_shape, step.acc_dtype)
            if isinstance(step, GemmStep) and step.epilogue is not None and not step.in_place:
                self.scratch[step.node] = exe.empty(acc_shape, step.acc_dtype)
            if isinstance(step, AttentionStep):
                if step.epilogue is not None:
                    self.scratch[step.node] = exe.empty(acc_shape, step.acc_dtype)
                self.scratch.update(exe.attention_scratch(step, acc_shape, bindings))
        self.acc_shapes = {s.node: tuple(evaluate(d, bindings) for d in s.acc_shape)
                           for s in exe.program.steps if isinstance(s, GemmStep)}
        self.memo = {}            # what a backend works out once per size (its own keys)
        self.size_args = {}
        for k in exe.kernels.values():
            self.size_args[k.name] = tuple(int(bindings[s]) for s in k.sizes)


class ProgramExecutable(Executable):
    """Runs a Program; subclasses provide the array module and the step kernels.

    The per-size state (:class:`Sized`: arena, views, scratch) of the ``max_sizes`` most
    recently used sets of symbol sizes is kept; calling with a new size beyond that frees
    the least recently used one (a server that sees every prompt length would otherwise
    hold an arena per length).

    Calls from several threads run one at a time: they would share the arena (and the
    library ops' scratch), and the kernels and BLAS release the GIL."""

    xp = np                      # the array module of the backend's memory
    max_sizes = 8
    # Constants read only as GEMM operands stay as given when they are C- or F-contiguous
    # (BLAS reads a transposed weight view, ``x @ W.T``, without a copy); the others are
    # made C-contiguous for the kernels. A backend whose memory is not NumPy's copies all.
    gemm_constant_views = True

    def __init__(self, graph, program, kernels):
        super().__init__(graph)
        self.program = program
        self.kernels = kernels            # name -> loop-IR Kernel
        self._sized: OrderedDict[tuple, Sized] = OrderedDict()
        as_given = gemm_only_constants(graph, program) if self.gemm_constant_views else set()
        self.constants = {}
        for nid, v in graph.constants.items():
            if nid in as_given and (v.flags.c_contiguous or v.flags.f_contiguous):
                self.constants[nid] = v
            else:
                self.constants[nid] = self.to_input(v)
        self._index_checks = index_checks(graph)
        self._gemm_runs = gemm_runs(program.steps)
        self.library = {}                 # LibraryStep node -> native run(out, ops)
        self._lock = threading.Lock()     # one call at a time (see the class docstring)

    # -- memory: NumPy by default -----------------------------------------------------
    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype)

    def arena_view(self, arena, shape, dtype, offset):
        return np.ndarray(shape, dtype, buffer=arena, offset=offset)

    def to_device(self, array):
        # np.ascontiguousarray makes a 0-d array 1-d: a 0-d output would come back [1]
        return np.ascontiguousarray(array) if np.ndim(array) else np.array(array)

    def shares_memory(self, a, b) -> bool:
        return np.shares_memory(a, b)

    def view(self, arr, view, sz):
        """``arr`` (a step operand) read through ``view``'s chain without a copy: step
        by step (NumPy's reshape / transpose / slice) where each step is a view, else
        as the one strided view the whole chain is (passes/views.py); which of the two,
        worked out once per size. A chain that is neither is applied step by step
        (NumPy copies where it must)."""
        chain = view.chain
        if not chain or all(op == "transpose" for op, _ in chain):
            return apply_chain(arr, chain, sz.bindings)
        key = ("view", id(view))
        layout = sz.memo.get(key, False)
        if layout is False:
            plain = apply_chain(arr, chain, sz.bindings)
            layout = sz.memo[key] = (
                "steps" if not arr.size or self.xp.may_share_memory(plain, arr)
                else strided_layout(chain, arr.shape, sz.bindings))
            if layout == "steps":
                return plain
        if layout == "steps" or layout is None or not arr.flags.c_contiguous:
            return apply_chain(arr, chain, sz.bindings)
        offset, shape, strides = layout
        flat = arr.reshape(-1)
        return self.xp.lib.stride_tricks.as_strided(
            flat[offset:] if offset else flat, shape, tuple(s * arr.itemsize for s in strides))

    def attention_operands(self, step, ops, sz):
        """q, k, v and the mask (None without one) of an AttentionStep, as the views its
        movement chains make of the step's operands."""
        q, k, v = (self.view(ops[v.operand], v, sz) for v in (step.q, step.k, step.v))
        mask = None
        if step.mask is not None:
            mask = self.view(ops[step.mask.operand], step.mask, sz)
            if mask.ndim < 2:                        # a mask over the keys only: [T]
                mask = mask.reshape((1,) * (2 - mask.ndim) + mask.shape)
        return q, k, v, mask

    def attention_scratch(self, step, acc_shape, bindings) -> dict:
        return {}

    # -- the steps ------------------------------------------------------------------------
    def sized(self, bindings) -> Sized:
        key = tuple(sorted(bindings.items()))
        s = self._sized.get(key)
        if s is None:
            self.check_sizes(bindings)
            self.check_memory(bindings)
            while len(self._sized) >= max(self.max_sizes, 1):
                self._sized.popitem(last=False)
            s = self._sized[key] = Sized(self, dict(bindings))
        else:
            self._sized.move_to_end(key)
        return s

    def memory_need(self, bindings):
        """(bytes a call at these sizes allocates, the largest tensor node, its bytes):
        the memory plan's arena, the steps' outputs outside it (the graph's outputs), the
        epilogues' accumulators and the attention scratch."""
        g = self.graph
        plan = g.meta["memory"].for_bindings(bindings)
        need = plan.arena_bytes
        fresh = []
        for step in self.program.steps:
            nid = step.node
            if nid not in plan.offsets and (nid not in plan.views or nid in g.outputs):
                fresh.append(nid)
            acc = getattr(step, "acc_shape", None)
            if acc is not None and (getattr(step, "epilogue", None) is not None
                                    or isinstance(step, AttentionStep)):
                n = np.dtype(step.acc_dtype).itemsize
                for d in acc:
                    n *= max(int(evaluate(d, bindings)), 0)
                need += n
        node, node_bytes = largest_tensor(g, [s.node for s in self.program.steps], bindings)
        need += sum(g.nodes[n].type.nbytes(bindings) for n in fresh)
        return need, node, node_bytes

    def memory_available(self):
        """Bytes a call may allocate (host memory; a GPU backend: the device's)."""
        return available_bytes()

    def check_memory(self, bindings) -> None:
        """An InputError before any work when the call would not fit (memory.py)."""
        avail = self.memory_available()
        if avail is None:
            return
        need, node, node_bytes = self.memory_need(bindings)
        check_fits(need, node, node_bytes, bindings, f"{self.graph.name} on {self.backend}",
                   available=avail, where=self.memory_kind)

    memory_kind = "memory"

    def inputs(self, arrays):
        return [self.to_input(a) for a in arrays]

    def to_input(self, array):
        """A call's input as the kernels take it: a read-only array (``flags.writeable``
        False, a ``np.memmap`` opened 'r', ``np.broadcast_to``) is copied, since a
        compiled kernel is specialised for writeable arrays."""
        if isinstance(array, np.ndarray) and (not array.flags.writeable
                                              or type(array) is not np.ndarray):
            array = np.array(array, copy=True, subok=False)
        return self.to_device(array)

    def run(self, arrays, bindings):
        with self._lock, self._out_of_memory(bindings):
            return self._run(arrays, bindings)

    def run_timed_steps(self, arrays, bindings, timer):
        with self._lock, self._out_of_memory(bindings):
            return self._run(arrays, bindings, timer)

    def _out_of_memory(self, bindings):
        """A MemoryError the estimate did not foresee (other processes took the memory)
        becomes an InputError naming the largest tensor and the bytes."""
        import contextlib

        @contextlib.contextmanager
        def guard():
            try:
                yield
            except MemoryError:
                need, node, node_bytes = self.memory_need(bindings)
                check_fits(need, node, node_bytes, bindings,
                           f"{self.graph.name} on {self.backend}",
                           available=self.memory_available(), where=self.memory_kind,
                           ran_out=True)
                raise
        return guard()

    def profile_entries(self, bindings):
        kinds = {KernelStep: "kernel", GemmStep: "gemm", AttentionStep: "attention",
                 LibraryStep: "library"}
        g = self.graph
        return [(s.node, g.nodes[s.node], kinds[type(s)],
                 g.nodes[s.node].type.concrete_shape(bindings)) for s in self.program.steps]

    def _run(self, arrays, bindings, timer=None):
        g = self.graph
        sz = self.sized(bindings)
        vals = dict(self.constants)
        for nid, a in zip(g.inputs, self.inputs(arrays)):
            vals[nid] = a
        for check in self._index_checks.get(None, ()):     # on graph inputs: before any work
            check.run(g, vals, bindings)
        outputs = set(g.outputs)
        steps = self.program.steps
        i = 0
        while i < len(steps):
            end = self._gemm_runs.get(i)
            if end is not None and timer is None and self.gemm_run(steps[i:end], vals, sz,
                                                                   outputs):
                i = end
                continue
            self._step(steps[i], vals, sz, outputs, timer)
            i += 1
        return self.results([vals[o] for o in g.outputs])

    def _step(self, step, vals, sz, outputs, timer=None) -> None:
        """Run one step: its output into ``vals``."""
        g = self.graph
        bindings = sz.bindings
        nid = step.node
        node = g.nodes[nid]
        if not isinstance(step, GemmStep):             # (gemm_operands runs a GEMM's)
            for check in self._index_checks.get(nid, ()):  # on computed ids: before it
                check.run(g, vals, bindings)
        if nid in sz.plan.views and nid not in outputs and nid not in sz.views:
            vals[nid] = vals[sz.plan.views[nid]].reshape(node.type.concrete_shape(bindings))
            return
        if timer is not None:
            t0 = timer.start()
        if isinstance(step, GemmStep):
            out, ops, a, b, acc = self.gemm_operands(step, vals, sz, outputs)
            self.matmul(a, b, acc)
            if step.epilogue is not None:
                self.kernel(step.epilogue, ops, out, acc, sz)
        else:
            out = self._out(step, sz)
            ops = [vals[o] for o in step.operands]
            if isinstance(step, KernelStep):
                acc = sz.scratch.get(nid) if step.epilogue is not None else None
                self.kernel(step.kernel, ops, out, acc, sz)
                if step.epilogue is not None:
                    self.kernel(step.epilogue, ops, out, acc, sz)
            elif isinstance(step, AttentionStep):
                self.attention(step, ops, out, sz)
            elif isinstance(step, LibraryStep):
                self.library_step(step, ops, out, bindings)
        if timer is not None:
            timer.stop(nid, t0)
        vals[nid] = out

    def _out(self, step, sz):
        out = sz.views.get(step.node)
        if out is None:
            t = self.graph.nodes[step.node].type
            out = self.empty(t.concrete_shape(sz.bindings), t.np_dtype)
        return out

    def gemm_operands(self, step, vals, sz, outputs):
        """A GemmStep's (out, operands, a, b, the array its product goes to: out in its
        accumulator's shape, or the epilogue's scratch), its index checks run. An operand
        only its epilogue reads may not be computed yet (a sibling's product, in a
        :meth:`gemm_run`): None."""
        for check in self._index_checks.get(step.node, ()):
            check.run(self.graph, vals, sz.bindings)
        out = self._out(step, sz)
        ops = [vals.get(o) for o in step.operands]
        a = self.view(ops[step.a.operand], step.a, sz)
        b = self.view(ops[step.b.operand], step.b, sz)
        acc = out.reshape(sz.acc_shapes[step.node]) \
            if step.epilogue is None or step.in_place else sz.scratch[step.node]
        return out, ops, a, b, acc

    def gemm_run(self, steps, vals, sz, outputs) -> bool:
        """Run ``steps``, consecutive GemmSteps none of which reads another's product as
        its a or b (:func:`gemm_runs`), together where the backend can (their products at
        once over its threads, then their epilogues in order) and return True; False:
        each is run as a step of its own."""
        return False

    def results(self, arrays):
        return arrays

    def matmul(self, a, b, out):
        self.xp.matmul(a, b, out=out)

    def attention_output(self, step, out, sz, writable=None):
        """Where the attention writes [..., S, dv]: a view of the output when the store
        chain is a view (and ``writable(view)``, when given, accepts its layout), else the
        step's scratch (the epilogue or a copy finishes)."""
        bindings = sz.bindings
        if step.epilogue is None:
            o = invert_chain(out, step.out_chain, step.acc_shape, bindings,
                             self.shares_memory)
            if o is not None and writable is not None and o.size and not writable(o):
                o = None
            if o is None:
                o = sz.scratch.get(step.node)
                if o is None:
                    o = sz.scratch[step.node] = self.empty(
                        tuple(evaluate(d, bindings) for d in step.acc_shape), step.acc_dtype)
            return o
        return sz.scratch[step.node]

    def finish_attention(self, step, ops, out, o, sz):
        if step.epilogue is not None:
            self.kernel(step.epilogue, ops, out, o, sz)
        elif not self.shares_memory(o, out):
            out[...] = apply_chain(o, step.out_chain, sz.bindings)

    def kernel_args(self, kernel, ops, out, acc):
        """The arrays for a kernel's buffer parameters, in order."""
        args = []
        for b in kernel.buffers:
            if b.name == "out":
                a = out
            elif b.name == "acc":
                a = acc
            else:
                a = ops[operand_index(b.name)]
            args.append(a.reshape(1) if a.ndim == 0 else a)
        return args

    def library_step(self, step, ops, out, bindings):
        raise NotImplementedError

    def kernel(self, kernel, ops, out, acc, sz):
        raise NotImplementedError

    def attention(self, step, ops, out, sz):
        raise NotImplementedError


def operand_index(buffer_name: str) -> int:
    """The step operand a kernel's input buffer ``in<k>`` reads (lower/kernels.py names
    them; ``out`` and ``acc`` are the output and the scratch)."""
    return int(buffer_name[2:])


def gemm_runs(steps) -> dict:
    """Runs of consecutive GemmSteps (index of the first -> one past the last, two or
    more) in which no step reads another's product as its a or b operand: sibling
    projections of one input (q, k and v; gate and up). An epilogue may read an earlier
    one's output (SwiGLU's up reading gate): epilogues run after all the products."""
    runs, i = {}, 0
    while i < len(steps):
        j, made = i, set()
        while j < len(steps) and isinstance(steps[j], GemmStep) and not (
                {steps[j].operands[steps[j].a.operand],
                 steps[j].operands[steps[j].b.operand]} & made):
            made.add(steps[j].node)
            j += 1
        if j - i >= 2:
            runs[i] = j
        i = max(j, i + 1)
    return runs


def gemm_only_constants(graph, program) -> set:
    """Constant nodes that every step reads only as a GEMM operand through transposes (no
    reshape, which could copy a strided view on every call) and no kernel of the step
    reads directly."""
    ok, bad = set(), set()
    for step in program.steps:
        gemm = {}                 # operand -> the GEMM views that read it (a, b or both)
        if isinstance(step, GemmStep):
            for v in (step.a, step.b):
                gemm.setdefault(v.operand, []).append(v)
        kernel_reads = set()
        for k in (getattr(step, "kernel", None), getattr(step, "epilogue", None)):
            if k is not None:
                kernel_reads |= {operand_index(b.name) for b in k.buffers
                                 if b.name not in ("out", "acc")}
        for i, nid in enumerate(step.operands):
            if nid not in graph.constants:
                continue
            views = gemm.get(i)
            if (views and i not in kernel_reads
                    and all(op == "transpose" for v in views for op, _ in v.chain)):
                ok.add(nid)
            else:
                bad.add(nid)
    return ok - bad


@dataclass(frozen=True)
class IndexCheck:
    """The ids (outer node ``ids``) of an index op must lie in [lo, n) for the size ``n``
    of the axis they index (``-n`` allowed where the op counts from the end, as
    take_along_axis does): what the reference raises, naming the op's line."""
    ids: int
    size: object                 # Dim: the indexed axis (symbolic sizes evaluated per call)
    negative: bool
    node: object                 # the index op (its name, loc)
    shapes: tuple
    axis: int

    def run(self, g, vals, bindings):
        ids = vals[self.ids]
        if not ids.size:
            return
        n = evaluate(self.size, bindings)
        lo = -n if self.negative else 0
        lo_seen, hi_seen = int(ids.min()), int(ids.max())
        if lo_seen >= lo and hi_seen < n:
            return
        bad = lo_seen if lo_seen < lo else hi_seen
        src = g.nodes[self.ids]
        where = f" (input '{src.attrs['name']}')" if src.op == "input" else ""
        op = self.node.op
        if op == "embedding":
            msg = f"embedding(): id {bad} is out of range for a table of {n} rows{where}"
        else:
            msg = (f"{op}(): index {bad} is out of range for axis {self.axis} of size {n}"
                   f"{where}")
        raise InputError(msg, op=op, node=self.node.name, shapes=list(self.shapes),
                         loc=self.node.loc)


def index_checks(graph) -> dict:
    """The range checks of every index op's ids (INDEX_OPS in graphc/passes/fuse.py keeps
    them a buffer), keyed by the step that reads them, or None for ids that are graph
    inputs or constants (checked before any work)."""
    from ..passes.fuse import INDEX_OPS
    checks: dict = {}
    for node in graph.nodes.values():
        if node.op != "fused":
            continue
        body = node.attrs["body"]
        for b in body.nodes.values():
            if b.op not in INDEX_OPS:
                continue
            src, ids = (body.nodes[i] for i in b.inputs[:2])
            if ids.id not in body.inputs:
                raise BackendError(f"{b.op}(): its ids are computed in the kernel that reads "
                                   "them, so their range cannot be checked", op=b.op,
                                   node=b.name, loc=b.loc)
            outer = node.inputs[body.inputs.index(ids.id)]
            axis = 0 if b.op == "embedding" else b.attrs["axis"]
            where = b if b.loc is not None else node
            key = None if graph.nodes[outer].op in ("input", "constant") else node.id
            checks.setdefault(key, []).append(IndexCheck(
                outer, src.type.shape[axis], b.op != "embedding", where,
                (src.type, ids.type), axis))
    return checks
