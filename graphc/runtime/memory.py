"""Will a call fit in memory? Checked before any work, so a call too large for the machine
is an :class:`~graphc.errors.InputError` naming the largest tensor (node, op, shape,
bytes) and the user's line, not NumPy's ``MemoryError`` (or the kernel's OOM kill) half
way through.

A compiled backend knows what a call allocates from its memory plan (the arena, the
outputs, the steps' scratch); the reference interpreter's need is estimated by walking
the graph as it runs: the values alive at each node (each freed after its last use) plus
the node's output and one NumPy temporary of its size. What the machine has is
``MemAvailable`` of ``/proc/meminfo`` (the free physical memory elsewhere), or less when
a container's cgroup limit leaves less; ``GRAPHC_MEMORY_LIMIT`` (bytes, or with a K/M/G
suffix) sets it instead.
"""
from __future__ import annotations

import math
import os

from ..errors import InputError

# ops whose NumPy reference returns a view of its input (no new memory)
VIEW_OPS = {"reshape", "transpose", "squeeze", "unsqueeze", "expand", "broadcast_to",
            "input", "constant"}


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def parse_bytes(text: str) -> int:
    """'8G', '512M', '1.5KiB', '1000000' -> bytes (K, M, G, T are powers of 1024); a
    ValueError for anything else (negative, not finite, no number)."""
    t = text.strip().upper()
    t = t[:-1] if t.endswith("B") and len(t) > 1 else t
    t = t[:-1] if t.endswith("I") else t
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    v = float(t[:-1] if mult > 1 else t)             # ValueError when no number
    if not math.isfinite(v) or v < 0 or v * mult >= 2 ** 63:
        raise ValueError(f"{text!r} is not a byte count")
    return int(v * mult)


def available_bytes() -> int | None:
    """Bytes of host memory a call may use (None when unknown: nothing is checked);
    ``$GRAPHC_MEMORY_LIMIT`` when set (an InputError when it is not a byte count)."""
    limit = os.environ.get("GRAPHC_MEMORY_LIMIT")
    if limit:
        try:
            return parse_bytes(limit)
        except ValueError:
            raise InputError("GRAPHC_MEMORY_LIMIT must be a byte count such as 8G, 512M or "
                             f"1000000, got {limit!r}") from None
    host = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    host = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if host is None:
        try:
            host = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    room = _cgroup_room()                # a container's limit, below the host's memory
    return min(host, room) if room is not None else host


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2, then v1), or None."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f:
                text = f.read().strip()
            if text == "max" or int(text) >= 1 << 60:
                return None
            with open(usage) as f:
                return max(int(text) - int(f.read().strip()), 0)
        except (OSError, ValueError):
            continue
    return None


def _nbytes(t, bindings, float64: bool) -> int:
    n = 8 if float64 and t.dtype == "float32" else t.np_dtype.itemsize
    for d in t.concrete_shape(bindings):
        n *= max(int(d), 0)
    return n


def last_uses(graph, order) -> dict[int, int]:
    """Each value's position in ``order`` of its last consumer (when the interpreter may
    free it); what no node reads is absent."""
    last_use: dict[int, int] = {}
    for pos, nid in enumerate(order):
        for i in graph.nodes[nid].inputs:
            last_use[i] = pos
    return last_use


def interpreter_peak(graph, bindings, float64: bool = False):
    """(peak bytes, the node whose step reaches it, the bytes that step allocates: its
    output and its temporaries or scratch) of run_graph on these sizes: inputs and
    constants count nothing (they exist already), fused bodies count their own peak at
    their node."""
    order = graph.topo_order()
    last_use = last_uses(graph, order)
    keep = set(graph.outputs)
    live: dict[int, int] = {}
    peak, at, at_bytes = 0, None, 0
    for pos, nid in enumerate(order):
        node = graph.nodes[nid]
        size = 0 if node.op in VIEW_OPS else _nbytes(node.type, bindings, float64)
        inner = 0
        if node.op == "fused" and "body" in node.attrs:
            inner = interpreter_peak(node.attrs["body"], bindings, float64)[0]
        elif node.op == "attention":
            inner = _attention_scratch(graph, node, bindings, float64)
        own = size + max(size, inner)        # its output + a temporary, or its scratch
        need = sum(live.values()) + own
        if need > peak:
            peak, at, at_bytes = need, node, own
        live[nid] = size
        for i in node.inputs:
            if last_use.get(i) == pos and i not in keep:
                live.pop(i, None)
    return peak, at, at_bytes


def _attention_scratch(graph, node, bindings, float64: bool) -> int:
    """The reference attention holds about three score arrays [..., S, T] at once (the
    scores, their exponentials, the normalised weights)."""
    q, k = (graph.nodes[i].type for i in node.inputs[:2])
    qs, ks = q.concrete_shape(bindings), k.concrete_shape(bindings)
    n = 3 * (8 if float64 and q.dtype == "float32" else q.np_dtype.itemsize)
    for d in (*qs[:-1], ks[-2]):
        n *= max(int(d), 0)
    return n


def largest_tensor(graph, nodes, bindings):
    """The node of ``nodes`` with the most bytes, and its bytes."""
    best, best_bytes = None, -1
    for nid in nodes:
        node = graph.nodes[nid]
        b = _nbytes(node.type, bindings, False)
        if b > best_bytes:
            best, best_bytes = node, b
    return best, max(best_bytes, 0)


def check_fits(need: int, node, node_bytes: int, bindings, what: str,
               available: int | None = None, where: str = "memory",
               role: str = "the largest is", ran_out: bool = False) -> None:
    """InputError when ``need`` bytes exceed what is available (``ran_out``: an
    allocation failed anyway); ``node`` (with ``node_bytes``) is the one to name."""
    if available is None:
        available = available_bytes()
    if not ran_out and (available is None or need <= available):
        return
    available = available or 0
    sizes = dict(sorted(bindings.items()))
    detail = ""
    if node is not None:
        shape = list(node.type.concrete_shape(bindings))
        detail = (f"; {role} {node.name} = {node.op}(...) : {node.type} = {shape}, "
                  f"{fmt_bytes(node_bytes)} ({node_bytes:,} bytes)")
    head = "ran out of memory: " if ran_out else ""
    raise InputError(
        f"{head}this call needs about {fmt_bytes(need)} ({need:,} bytes) of {where} for "
        f"{what} at sizes {sizes}, but only {fmt_bytes(available)} ({available:,} bytes) "
        f"is available{detail}; use smaller sizes (or set GRAPHC_MEMORY_LIMIT to override)",
        op=node.op if node is not None else None,
        node=node.name if node is not None else None,
        shapes=[node.type] if node is not None else None,
        loc=node.loc if node is not None else None)
