"""Memory planning: every intermediate tensor gets a byte offset in one arena.

* **Intermediates** are the outputs of computing nodes that are not graph outputs. Graph
  inputs and constants belong to the caller / the weights; graph outputs are returned to
  the caller, so they are allocated separately (one buffer each) and never share the arena.
* **Liveness** follows the schedule (``graph.topo_order()``, which the ``schedule`` pass
  fixes): a value is live from the step that computes it to the last step that reads it,
  both included, so an operand and the result of the same step never share bytes unless
  reused in place on purpose.
* **Aliases**: a reshape-only group (or a bare ``reshape``) makes no buffer; it views its
  operand's bytes, which then stay live until the view's last use. A view of an input, a
  constant or a graph output needs no arena bytes at all.
* **In place**: a purely elementwise group (no movement op in its body) may write its
  result into the buffer of an operand of the same shape and dtype whose last use is that
  group (each element is read before the same element is written).
* **Offsets**: best-fit over buffers whose lifetimes overlap, trying a few placement orders
  (largest first, longest-lived first, earliest first) and keeping the smallest arena.
  Offsets and buffer extents are aligned to 64 bytes.

``plan_memory_for(graph, bindings)`` plans for one set of symbol sizes. The pass stores
``graph.meta["memory"]``: a :class:`MemoryPlan` for a graph with static shapes, or a
:class:`MemoryPlanner` (liveness kept, a plan made and cached per bindings) for a symbolic
graph. Both answer ``for_bindings(bindings) -> MemoryPlan``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..ir.dims import Dim, evaluate, prod
from ..ir.graph import Graph
from ..ops.registry import get_op
from .manager import note, register_pass

ALIGNMENT = 64
NOT_COMPUTING = ("input", "constant")


def _align(n: int, a: int = ALIGNMENT) -> int:
    return -(-n // a) * a


def nbytes(type) -> Dim:
    """Byte size of a tensor type as a polynomial in the symbols."""
    return prod(type.shape) * type.np_dtype.itemsize


def is_reshape_only(node) -> bool:
    """A view: a bare reshape, or a fused group whose body only reshapes."""
    if node.op == "reshape":
        return True
    if node.op == "fused":
        body = node.attrs["body"]
        ops = [n.op for n in body.nodes.values() if n.op not in NOT_COMPUTING]
        return bool(ops) and all(op == "reshape" for op in ops)
    return False


def is_pure_elementwise(node) -> bool:
    """Reads every operand at the index it writes (safe to compute in place)."""
    if node.op == "fused":
        if node.attrs["kind"] != "elementwise":
            return False
        body = node.attrs["body"]
        return all(get_op(n.op).kind in ("elementwise", "broadcast")
                   for n in body.nodes.values() if n.op not in NOT_COMPUTING)
    if node.op in NOT_COMPUTING:
        return False
    return get_op(node.op).kind in ("elementwise", "broadcast")


@dataclass
class Liveness:
    """Buffers and lifetimes of a graph's intermediates under one schedule, with sizes
    still symbolic. ``plan(bindings)`` places them."""

    order: list[int]                       # computing nodes, in schedule order
    step: dict[int, int]                   # node -> step that computes it
    last_use: dict[int, int]               # node -> last step reading it (itself if unread)
    size: dict[int, Dim]                   # node -> bytes of its value (symbolic)
    buffer_of: dict[int, int]              # intermediate -> root node of its buffer
    views: dict[int, int]                  # reshape view -> the node it views
    inplace: list[tuple[int, int]]         # (node, operand whose buffer it takes)
    buffers: dict[int, list[int]]          # root -> member nodes (defining order)
    interval: dict[int, tuple[int, int]]   # root -> (first step, last step) of the buffer
    outputs: list[int] = field(default_factory=list)

    # -- sizes at given bindings --------------------------------------------------------
    def sizes_at(self, bindings: Mapping[str, int]) -> dict[int, int]:
        return {n: evaluate(s, bindings) for n, s in self.size.items()}

    def lower_bound(self, bindings: Mapping[str, int]) -> int:
        """Most bytes live at once (buffers after aliasing and in-place reuse)."""
        sizes = self.sizes_at(bindings)
        delta = [0] * (len(self.order) + 1)
        for root, (s, e) in self.interval.items():
            b = max(sizes[m] for m in self.buffers[root])
            delta[s] += b
            delta[e + 1] -= b
        peak = cur = 0
        for d in delta:
            cur += d
            peak = max(peak, cur)
        return peak

    def plan(self, bindings: Mapping[str, int] | None = None) -> "MemoryPlan":
        bindings = dict(bindings or {})
        sizes = self.sizes_at(bindings)
        bufs = []
        for root, (s, e) in self.interval.items():
            b = max(sizes[m] for m in self.buffers[root])
            bufs.append((root, b, s, e))
        offsets_root, arena = _place(bufs)
        offsets = {m: offsets_root[root] for root, ms in self.buffers.items() for m in ms}
        node_iv = {}
        for n in self.buffer_of:
            node_iv[n] = (self.step[n], self.last_use[n])
        naive = sum(_align(sizes[n]) for n in self.buffer_of if n not in self.views)
        return MemoryPlan(
            offsets=offsets, sizes={n: sizes[n] for n in self.buffer_of},
            intervals=node_iv, arena_bytes=arena, naive_bytes=naive,
            lower_bound_bytes=self.lower_bound(bindings), inplace=list(self.inplace),
            buffer_of=dict(self.buffer_of), views=dict(self.views),
            buffer_intervals=dict(self.interval), order=list(self.order),
            bindings=bindings)


def liveness(graph: Graph, order: list[int] | None = None) -> Liveness:
    """Lifetimes of ``graph``'s intermediates under ``order`` (computing nodes in run
    order; default ``graph.topo_order()``)."""
    if order is None:
        order = [n for n in graph.topo_order() if graph.nodes[n].op not in NOT_COMPUTING]
    step = {n: k for k, n in enumerate(order)}
    outputs = set(graph.outputs)
    last_use: dict[int, int] = {n: step[n] for n in order}
    for n in order:
        for i in graph.nodes[n].inputs:
            if i in step:
                last_use[i] = max(last_use[i], step[n])
    size = {n: nbytes(graph.nodes[n].type) for n in order}

    # Views first (they do not depend on in-place decisions).
    buffer_of: dict[int, int] = {}
    views: dict[int, int] = {}
    for n in order:
        if n in outputs:
            continue
        node = graph.nodes[n]
        if is_reshape_only(node):
            src = node.inputs[0]
            views[n] = src
            if src in buffer_of:
                buffer_of[n] = buffer_of[src]
            continue  # a view of an input / constant / graph output: no arena bytes
        buffer_of[n] = n
    buffers: dict[int, list[int]] = {}
    for n in order:
        if n in buffer_of:
            buffers.setdefault(buffer_of[n], []).append(n)

    def end_of(root: int) -> int:
        return max(last_use[m] for m in buffers[root])

    # In-place reuse, in schedule order (a chain of elementwise groups shares one buffer).
    inplace: list[tuple[int, int]] = []
    for n in order:
        if buffer_of.get(n) != n or not is_pure_elementwise(graph.nodes[n]):
            continue
        t = graph.nodes[n].type
        reads: dict[int, set[int]] = {}
        for i in graph.nodes[n].inputs:
            if i in buffer_of:
                reads.setdefault(buffer_of[i], set()).add(i)
        for root, via in reads.items():
            if len(via) != 1:
                continue  # the buffer is read through two different views
            (i,) = via
            ti = graph.nodes[i].type
            if ti.shape != t.shape or ti.dtype != t.dtype or end_of(root) != step[n]:
                continue
            if size[root] != size[n]:
                continue
            for m in buffers.pop(n):
                buffer_of[m] = root
                buffers[root].append(m)
            inplace.append((n, i))
            break
    interval = {root: (step[root], end_of(root)) for root in buffers}
    return Liveness(order=list(order), step=step, last_use=last_use, size=size,
                    buffer_of=buffer_of, views=views, inplace=inplace, buffers=buffers,
                    interval=interval, outputs=list(graph.outputs))


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _breadth_order(bufs: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Buffers of the busiest step first (largest first within a step), then the next
    busiest step's remaining ones: TFLite's "greedy by breadth"."""
    if not bufs:
        return []
    steps = max(e for _, _, _, e in bufs) + 1
    live: list[list[tuple[int, int, int, int]]] = [[] for _ in range(steps)]
    for b in bufs:
        for t in range(b[2], b[3] + 1):
            live[t].append(b)
    busy = sorted(range(steps), key=lambda t: (-sum(b[1] for b in live[t]), t))
    out, seen = [], set()
    for t in busy:
        for b in sorted(live[t], key=lambda b: (-b[1], b[2], b[0])):
            if b[0] not in seen:
                seen.add(b[0])
                out.append(b)
    return out


def _place(bufs: list[tuple[int, int, int, int]]) -> tuple[dict[int, int], int]:
    """Best-fit offsets for (id, bytes, first step, last step) buffers; tries several
    placement orders and keeps the smallest arena."""
    orders = (
        sorted(bufs, key=lambda b: (-b[1], b[2], b[0])),                 # largest first
        _breadth_order(bufs),                                            # busiest step first
        sorted(bufs, key=lambda b: (-(b[3] - b[2]), -b[1], b[2], b[0])),  # longest-lived first
        sorted(bufs, key=lambda b: (b[2], -b[1], b[0])),                 # earliest first
    )
    best: tuple[dict[int, int], int] | None = None
    for order in orders:
        placed: list[tuple[int, int, int, int]] = []   # (offset, end, first, last)
        offsets: dict[int, int] = {}
        arena = 0
        for bid, nb, s, e in order:
            need = _align(max(nb, 1))
            busy = sorted((o, end) for o, end, ps, pe in placed if _overlap((s, e), (ps, pe)))
            pick, pick_gap, prev = None, None, 0
            for lo, hi in busy:
                gap = lo - prev
                if gap >= need and (pick_gap is None or gap < pick_gap):
                    pick, pick_gap = prev, gap
                prev = max(prev, hi)
            if pick is None:
                pick = prev
            offsets[bid] = pick
            placed.append((pick, pick + need, s, e))
            arena = max(arena, pick + need)
        if best is None or arena < best[1]:
            best = (offsets, arena)
    return best if best is not None else ({}, 0)


@dataclass
class MemoryPlan:
    """Arena offsets for one set of symbol sizes.

    ``offsets`` / ``sizes`` / ``intervals`` are per intermediate node (an alias or an
    in-place result has its buffer's offset); ``buffer_of`` names the node whose buffer
    each one lives in; ``views`` maps reshape views to the node they view (views of
    inputs, constants and graph outputs have no offset). ``naive_bytes``: every
    intermediate in its own buffer; ``lower_bound_bytes``: the most bytes live at once
    under the schedule; ``arena_bytes``: what this plan uses."""

    offsets: dict[int, int]
    sizes: dict[int, int]
    intervals: dict[int, tuple[int, int]]
    arena_bytes: int
    naive_bytes: int
    lower_bound_bytes: int
    inplace: list[tuple[int, int]]
    buffer_of: dict[int, int] = field(default_factory=dict)
    views: dict[int, int] = field(default_factory=dict)
    buffer_intervals: dict[int, tuple[int, int]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    bindings: dict[str, int] = field(default_factory=dict)
    alignment: int = ALIGNMENT

    def for_bindings(self, bindings: Mapping[str, int] | None = None) -> "MemoryPlan":
        """This plan (it was made for fixed sizes): the same call as on a MemoryPlanner."""
        return self

    def check(self) -> None:
        """Raise AssertionError if two buffers live at the same time share bytes, an
        offset is misaligned or outside the arena, or a shared buffer is unsafe."""
        def fail(msg):
            raise AssertionError(f"memory plan: {msg}")

        for n, off in self.offsets.items():
            if off % self.alignment:
                fail(f"%{n} offset {off} is not {self.alignment}-byte aligned")
            if off + self.sizes[n] > self.arena_bytes:
                fail(f"%{n} [{off}, {off + self.sizes[n]}) overflows the arena "
                     f"({self.arena_bytes} bytes)")
            if off != self.offsets[self.buffer_of[n]]:
                fail(f"%{n} is not at the offset of its buffer %{self.buffer_of[n]}")
        writers = {a for a, _ in self.inplace}
        nodes = sorted(self.offsets)
        for k, a in enumerate(nodes):
            for b in nodes[k + 1:]:
                ia, ib = self.intervals[a], self.intervals[b]
                if not _overlap(ia, ib):
                    continue
                if self.buffer_of[a] == self.buffer_of[b]:
                    # Same bytes at once: fine for two views of one value, or where one
                    # value dies at the step that computes the other in place.
                    if self._same_value(a, b):
                        continue
                    if (ia[1] == ib[0] and b in writers) or (ib[1] == ia[0] and a in writers):
                        continue
                    fail(f"%{a} {ia} and %{b} {ib} share buffer %{self.buffer_of[a]} "
                         "while both are live")
                    continue
                oa, ob = self.offsets[a], self.offsets[b]
                if oa < ob + self.sizes[b] and ob < oa + self.sizes[a]:
                    fail(f"%{a} [{oa}, {oa + self.sizes[a]}) live {ia} overlaps %{b} "
                         f"[{ob}, {ob + self.sizes[b]}) live {ib}")
        if self.arena_bytes < self.lower_bound_bytes:
            fail(f"arena {self.arena_bytes} is below the lower bound "
                 f"{self.lower_bound_bytes}")

    def _same_value(self, a: int, b: int) -> bool:
        """a and b are views (through reshapes) of one value."""
        def source(n):
            while n in self.views:
                n = self.views[n]
            return n
        return source(a) == source(b)

    def summary(self) -> str:
        def mib(n):
            return f"{n / 2**20:.2f} MiB"
        return (f"naive {mib(self.naive_bytes)}, arena {mib(self.arena_bytes)}, "
                f"lower bound {mib(self.lower_bound_bytes)} "
                f"({len(self.offsets)} intermediates, {len(self.inplace)} in place, "
                f"{len(self.views)} views)")


class MemoryPlanner:
    """The liveness of a symbolic graph; plans lazily, one cached plan per bindings."""

    def __init__(self, live: Liveness):
        self.liveness = live
        self._cache: dict[tuple, MemoryPlan] = {}

    def for_bindings(self, bindings: Mapping[str, int] | None = None) -> MemoryPlan:
        key = tuple(sorted((bindings or {}).items()))
        plan = self._cache.get(key)
        if plan is None:
            plan = self._cache[key] = self.liveness.plan(dict(bindings or {}))
        return plan

    plan = for_bindings

    def __repr__(self) -> str:
        return (f"<MemoryPlanner: {len(self.liveness.buffers)} buffers over "
                f"{len(self.liveness.order)} steps, {len(self._cache)} plans cached>")


def plan_memory_for(graph: Graph, bindings: Mapping[str, int] | None = None) -> MemoryPlan:
    """Plan ``graph``'s intermediates in one arena for the symbol sizes ``bindings``,
    following the graph's current order (``graph.topo_order()``)."""
    return liveness(graph).plan(bindings or {})


def _symbolic(graph: Graph) -> bool:
    return any(not n.type.is_static for n in graph.nodes.values())


@register_pass("plan_memory")
def plan_memory(graph: Graph) -> Graph:
    live = liveness(graph)
    if _symbolic(graph):
        graph.meta["memory"] = MemoryPlanner(live)
        note("plan_memory", f"{len(live.buffers)} buffers for {len(live.order)} steps; "
             "sizes are symbolic, planned per call sizes")
    else:
        plan = live.plan({})
        graph.meta["memory"] = plan
        note("plan_memory", plan.summary())
    return graph
