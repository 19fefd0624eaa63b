"""Lowering: a fused, scheduled graph -> a Program of steps.

Each ``fused`` node becomes one step, in schedule order:

* ``KernelStep``: a loop-IR kernel (elementwise and reduction groups); a reduction whose
  epilogue is not pointwise runs as two kernels, the anchor into a scratch buffer and
  then the epilogue pulled from it;
* ``GemmStep``: the group's matmul/gemm goes to the backend's GEMM (BLAS, cuBLAS) on
  strided views of its operands, then an epilogue kernel applies bias, activation and the
  group's elementwise tail in one pass (in place on the output, read in the anchor's
  shape, when the store is at most reshaped; no epilogue for a matmul that is only
  reshaped);
* ``AttentionStep``: the backend's blockwise attention template, then the epilogue;
* ``LibraryStep``: an opaque op (``topk``) that runs its NumPy implementation.

The Program knows buffers by graph node id; the backend's runtime binds them to the
arena of the memory plan, the caller's inputs, the weights and fresh output arrays.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import networkx as nx

from ..errors import BackendError
from ..passes.views import VIEW_CHAIN_OPS, chain_entry
from . import loopir as L
from .indices import simplify_indices
from .kernels import (NotPointwise, anchor_of, elementwise_kernel, gemm_value, load_acc,
                      pointwise_store, pull_epilogue_kernel, reduction_kernel,
                      template_epilogue_kernel)


@dataclass
class View:
    """How a template operand is read: body input ``operand`` through reshapes,
    transposes and slices (a strided view, no copy: passes/views.py)."""
    operand: int
    chain: list            # [("reshape", shape) | ("transpose", axes) | ("slice", (starts,
    #                         stops, steps))]


@dataclass
class KernelStep:
    node: int
    operands: list[int]
    kernel: L.Kernel
    # A reduction whose epilogue is not pointwise: ``kernel`` stores the anchor into a
    # scratch buffer ``acc`` (acc_shape, acc_dtype), then ``epilogue`` makes the output.
    epilogue: L.Kernel | None = None
    acc_shape: tuple = ()
    acc_dtype: str = ""


@dataclass
class GemmStep:
    node: int
    operands: list[int]
    a: View
    b: View
    epilogue: L.Kernel | None   # None: matmul straight into the output
    acc_shape: tuple            # anchor output shape (dims may be symbolic)
    acc_dtype: str
    in_place: bool              # the epilogue reads and writes the output buffer


@dataclass
class AttentionStep:
    node: int
    operands: list[int]
    q: View
    k: View
    v: View
    scale: float
    causal: bool
    epilogue: L.Kernel | None   # None: the store chain is a view of the output
    out_chain: list             # movement ops after the attention (a remapped store)
    acc_shape: tuple
    acc_dtype: str
    keys: object                # number of keys T (a dim)
    # The optional mask (operand 3 of the op), broadcastable to the scores [..., S, T]:
    # added to them, or, when ``mask_bool``, a bool mask (False: the score becomes
    # ``mask_fill``). k and v may have fewer heads than q (a batch dim of 1 or a divisor
    # of q's: grouped-query attention); the backends read them without copies.
    mask: View | None = None
    mask_bool: bool = False
    mask_fill: float = float("-inf")
    softcap: float = 0.0        # > 0: the scaled scores capped to c * tanh(s / c) first


@dataclass
class LibraryStep:
    node: int
    operands: list[int]
    body: object

    def single_op(self):
        """The body's op node when the body is that one op applied to the body's inputs
        in order (what a backend's native implementation can run directly), else None."""
        nodes = [n for n in self.body.nodes.values() if n.op != "input"]
        if (len(nodes) != 1 or list(nodes[0].inputs) != list(self.body.inputs)
                or list(self.body.outputs) != [nodes[0].id]):
            return None
        return nodes[0]


@dataclass
class Program:
    graph: object
    steps: list = field(default_factory=list)

    @property
    def kernels(self) -> list[L.Kernel]:
        out = []
        for s in self.steps:
            for k in (getattr(s, "kernel", None), getattr(s, "epilogue", None)):
                if k is not None:
                    out.append(k)
        return out

    def __str__(self) -> str:
        lines = [f"program {self.graph.name}: {len(self.steps)} steps, "
                 f"{len({k.name for k in self.kernels})} distinct kernels"]
        for s in self.steps:
            ops = ", ".join(f"%{o}" for o in s.operands)
            head = f"%{s.node} = "
            if isinstance(s, KernelStep):
                lines.append(f"{head}{s.kernel.name}({ops})"
                             + (f" -> epilogue {s.epilogue.name}" if s.epilogue else ""))
            elif isinstance(s, GemmStep):
                lines.append(f"{head}gemm(view(%{s.operands[s.a.operand]} {_chain(s.a)}), "
                             f"view(%{s.operands[s.b.operand]} {_chain(s.b)}))"
                             + (f" -> epilogue {s.epilogue.name}"
                                f"{' in place' if s.in_place else ''}" if s.epilogue else ""))
            elif isinstance(s, AttentionStep):
                mask = ""
                if s.mask is not None:
                    mask = (f", mask=bool(%{s.operands[s.mask.operand]}, "
                            f"fill={s.mask_fill:g})" if s.mask_bool
                            else f", mask=%{s.operands[s.mask.operand]}")
                cap = f", softcap={s.softcap:g}" if s.softcap else ""
                lines.append(f"{head}attention(q, k, v{mask}, scale={s.scale:g}, "
                             f"causal={s.causal}{cap}) blockwise"
                             + (f" -> epilogue {s.epilogue.name}" if s.epilogue else ""))
            else:
                lines.append(f"{head}library {s.body.name}({ops})")
        seen = set()
        for k in self.kernels:
            if k.name not in seen:
                seen.add(k.name)
                lines.append("")
                lines.append(str(k))
        return "\n".join(lines)


def _chain(v: View) -> str:
    return " ".join(f"{op}{tuple(arg)}" for op, arg in v.chain) or "as is"


def kernel_name(kernel: L.Kernel) -> str:
    """Content-derived name: identical kernels (one per layer) share a compile."""
    text = L.format_kernel(L.Kernel("k", kernel.buffers, kernel.sizes, kernel.body))
    return "k_" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _named(kernel: L.Kernel, label: str) -> L.Kernel:
    kernel = simplify_indices(kernel)
    kernel.name = kernel_name(kernel)
    kernel.meta["group"] = label
    return kernel


def _view(body, nid: int) -> View:
    chain = []
    node = body.nodes[nid]
    while node.op in VIEW_CHAIN_OPS:
        chain.append(chain_entry(node))
        node = body.nodes[node.inputs[0]]
    if node.id not in body.inputs:
        raise BackendError(f"template operand {body.nodes[nid].name} is computed in the "
                           "group, not a strided view of an input", node=node.name)
    return View(body.inputs.index(node.id), list(reversed(chain)))


def _store_chain(body, anchor: int):
    """Movement ops from the anchor to the output, if that is all the epilogue is."""
    chain, nid = [], anchor
    while nid != body.outputs[0]:
        users = body.users(nid)
        if len(users) != 1:
            return None
        node = body.nodes[users[0]]
        if node.op not in ("reshape", "transpose"):
            return None
        chain.append(chain_entry(node))
        nid = node.id
    return chain


def _reading_output(kernel: L.Kernel) -> L.Kernel | None:
    """An in-place epilogue that reads the GEMM's result from ``out`` itself instead of
    an ``acc`` parameter that would be the same memory: a compiler vectorises ``out[i] =
    f(out[i])`` but falls back to scalar code when two parameters overlap (its run-time
    alias check fails), ~10x slower for a SwiGLU epilogue on the numba backend. Each
    load of ``acc`` becomes a load of ``out`` at the index the loop stores (the same
    element: a reshape after the anchor only renames it). None when the kernel is not
    one store per element with its loads beside it."""
    inner, loops = kernel.body, 0          # down the loop nest (index decodes beside it)
    while inner and isinstance(inner[-1], L.Loop) and \
            all(isinstance(s, L.Assign) and s.dtype == "int64" for s in inner[:-1]):
        inner, loops = inner[-1].body, loops + 1
    stores = [s for s in inner if isinstance(s, L.Store)]
    if not loops or len(stores) != 1 or stores[-1] is not inner[-1] or \
            any(isinstance(s, (L.Loop, L.Reduce)) for s in inner):
        return None
    (store,) = stores
    ours = {id(n) for s in inner for n in L.walk(s)}
    if any(isinstance(n, L.Load) and n.buf == "acc" and id(n) not in ours
           for n in L.walk(kernel.body)):
        return None

    def remap(n):
        return L.Load("out", store.index) if isinstance(n, L.Load) and n.buf == "acc" else None
    bufs = [L.BufferParam(b.name, b.dtype, b.rank, "inout") if b.name == "out" else b
            for b in kernel.buffers if b.name != "acc"]
    out = L.Kernel(kernel.name, bufs, list(kernel.sizes), L.rewrite(kernel.body, remap),
                   dict(kernel.meta))
    out.name = kernel_name(out)
    return out


def lower(graph) -> Program:
    """Lower a graph whose computing nodes are all ``fused`` nodes (after the fuse pass)."""
    prog = Program(graph)
    for node in graph:
        if node.op in ("input", "constant"):
            continue
        if node.op != "fused":
            raise BackendError(f"lowering needs a fused graph; {node.op} is not in a group "
                               "(run the 'fuse' pass)", op=node.op, node=node.name,
                               loc=node.loc)
        body, kind = node.attrs["body"], node.attrs["kind"]
        label = node.meta.get("group", body.name)
        ops = list(node.inputs)
        if kind in ("elementwise", "movement"):
            prog.steps.append(KernelStep(node.id, ops, _named(elementwise_kernel(body, ""),
                                                              label)))
        elif kind == "reduction":
            try:
                step = KernelStep(node.id, ops, _named(reduction_kernel(body, ""), label))
            except NotPointwise:
                a = body.nodes[anchor_of(body)]
                step = KernelStep(
                    node.id, ops, _named(reduction_kernel(body, "", store_anchor=True), label),
                    _named(pull_epilogue_kernel(body, "", a.id, load_acc), label),
                    a.type.shape, a.type.dtype)
            prog.steps.append(step)
        elif kind == "contraction":
            aid = anchor_of(body)
            a = body.nodes[aid]
            # a matmul whose result only goes through reshapes: the GEMM writes the
            # output buffer, read in the anchor's shape (row-major order kept)
            direct = a.op == "matmul" and all(body.nodes[n].op == "reshape"
                                              for n in nx.descendants(body.nx, aid))
            epi, pointwise = None, True
            if not direct:
                try:
                    epi = template_epilogue_kernel(body, "", aid, gemm_value(body, aid))
                except NotPointwise:
                    epi, pointwise = pull_epilogue_kernel(body, "", aid,
                                                          gemm_value(body, aid)), False
                epi = _named(epi, label)
            # In place: the epilogue reads acc[idx] and writes out[idx], nothing else.
            in_place = (not direct and pointwise and pointwise_store(body, aid) and
                        body.nodes[body.outputs[0]].type.dtype == a.type.dtype)
            if in_place:
                reading = _reading_output(epi)
                in_place = reading is not None
                epi = reading or epi
            prog.steps.append(GemmStep(node.id, ops, _view(body, a.inputs[0]),
                                       _view(body, a.inputs[1]), epi, a.type.shape,
                                       a.type.dtype, in_place))
        elif kind == "attention":
            aid = anchor_of(body)
            a = body.nodes[aid]
            chain = _store_chain(body, aid)
            epi = None
            if chain is None:
                try:
                    epi = template_epilogue_kernel(body, "", aid, load_acc)
                except NotPointwise:
                    epi = pull_epilogue_kernel(body, "", aid, load_acc)
                epi = _named(epi, label)
            mask = _view(body, a.inputs[3]) if len(a.inputs) > 3 else None
            prog.steps.append(AttentionStep(
                node.id, ops, _view(body, a.inputs[0]), _view(body, a.inputs[1]),
                _view(body, a.inputs[2]), a.attrs["scale"], a.attrs["causal"], epi,
                chain or [], a.type.shape, a.type.dtype, body.nodes[a.inputs[1]].type.shape[-2],
                mask, mask is not None and body.nodes[a.inputs[3]].type.dtype == "bool",
                a.attrs.get("mask_fill", float("-inf")), a.attrs.get("softcap", 0.0)))
        else:
            prog.steps.append(LibraryStep(node.id, ops, body))
    return prog
