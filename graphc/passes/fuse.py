"""Kernel fusion by op kind: every computing node ends up inside a ``fused`` node.

A group is a set of nodes that one kernel computes. It has at most one *anchor* (a
contraction, a reduction, ``attention`` or an opaque op); the other members are
elementwise or movement ops around it:

* **prologue**: members the anchor reads (its in-group ancestors). A reduction takes any
  elementwise/movement prologue. A contraction (``matmul``, ``gemm``) and ``attention`` take
  only what a GEMM / flash kernel reads through strides: on each data operand (``a``, ``b``
  of matmul; ``x``, ``w`` of gemm; ``q``, ``k``, ``v`` of attention) any reshape /
  transpose / slice chain that is one strided view of the contiguous source
  (passes/views.py decides, for every binding of the sizes), such that the source's
  unit-stride axis ends up as one of the operand's last two axes (BLAS ``trans`` flag /
  leading dimension, batch dims as strides). Never anything on the gemm ``bias`` operand.
* **epilogue**: members reading the anchor (its in-group descendants) plus their side
  inputs. Elementwise ops, and ``reshape`` / ``transpose`` (a remapped store). An epilogue
  op never computes more elements than the anchor produces ("no broadcast to a bigger
  shape").
* an opaque anchor (``topk``, an existing ``fused`` node) stays alone.

Rules that keep fusion safe: a group has exactly one output (a producer fuses only if all
its users are in the group and it is not a graph output, so no work is duplicated), and
merging two groups must not create a cycle in the group graph (networkx reachability).

Greedy order: first a reshape / transpose / slice read by several elementwise or movement
ops is copied once per reader (an index remap repeated costs nothing, and a shared one
could join none of them); (A) movement ops join their single consumer (an index remap is
cheapest on the load side), consumers first; (B) every consumer tries to join the group of
each of its producers, in topological order, repeated until nothing changes. Constants
stay outside the groups as operands (weights are kernel arguments), except one-element
constants, which are copied into the body as literals.
"""
from __future__ import annotations

import networkx as nx

from ..ir.dims import prod
from ..ir.graph import Graph
from ..ops.registry import get_op
from .manager import note, register_pass
from .views import VIEW_CHAIN_OPS, chain_entry, chain_layout

ANCHOR_ROLES = ("contraction", "reduction", "attention", "opaque")
STORE_REMAPS = ("reshape", "transpose")       # movement ops allowed in an epilogue
STRIDED = VIEW_CHAIN_OPS                      # movement ops a GEMM / attention can absorb
# Operands of an anchor a strided prologue may feed (the others take no prologue).
DATA_OPERANDS = {"matmul": (0, 1), "gemm": (0, 1), "attention": (0, 1, 2)}
INLINE_CONSTANT_SIZE = 1                      # constants this small are copied into a body
NOT_COMPUTING = ("input", "constant")
# Ops whose operand 1 holds ids into operand 0: the ids are never computed inside the
# group that reads them, so the runtime can check their range on a buffer before the
# kernel runs (graphc/runtime/program.py, index_checks); a kernel would clamp silently.
INDEX_OPS = ("embedding", "take_along_axis")


def role(node) -> str:
    """What a node is for fusion: elementwise, movement or one of ANCHOR_ROLES."""
    if node.op == "attention":
        return "attention"
    if node.op == "fused":
        return "opaque"
    kind = get_op(node.op, node.loc).kind
    if kind in ("elementwise", "broadcast"):
        return "elementwise"
    return kind


def _numel(shape):
    return prod(shape)


class _Groups:
    """Union of nodes into groups, with the group graph (a networkx DiGraph over group ids)
    kept in sync for cycle checks."""

    def __init__(self, graph: Graph, comp: list[int]):
        self.graph = graph
        self.of = {n: n for n in comp}
        self.members = {n: {n} for n in comp}
        self.gg = nx.DiGraph()
        self.gg.add_nodes_from(comp)
        for n in comp:
            for i in graph.nodes[n].inputs:
                if i in self.of and i != n:
                    self.gg.add_edge(i, n)

    def would_cycle(self, a: int, b: int) -> bool:
        """Merging groups a and b makes a cycle iff one reaches the other through a third."""
        for src, dst in ((a, b), (b, a)):
            for x in self.gg.successors(src):
                if x != dst and nx.has_path(self.gg, x, dst):
                    return True
        return False

    def merge(self, a: int, b: int) -> int:
        """Fold group b into group a."""
        for n in self.members[b]:
            self.of[n] = a
        self.members[a] |= self.members.pop(b)
        for p in list(self.gg.predecessors(b)):
            if p != a:
                self.gg.add_edge(p, a)
        for s in list(self.gg.successors(b)):
            if s != a:
                self.gg.add_edge(a, s)
        self.gg.remove_node(b)
        return a


class _Checker:
    """Decides whether a set of nodes is a valid group; returns a reason when it is not."""

    def __init__(self, graph: Graph, roles: dict[int, str]):
        self.graph = graph
        self.roles = roles
        self.outputs = set(graph.outputs)

    def escaping(self, members: set[int]) -> list[int]:
        """Members whose value is needed outside the group (users outside, or an output)."""
        g = self.graph
        return [n for n in members
                if n in self.outputs or any(u not in members for u in g.users(n))]

    def check(self, members: set[int]) -> str | None:
        g = self.graph
        for m in sorted(members):
            node = g.nodes[m]
            if node.op in INDEX_OPS and node.inputs[1] in members:
                return (f"the ids of {node.op} %{m} stay a buffer (each call checks their "
                        "range before the kernel reads them)")
        anchors = sorted((n for n in members if self.roles[n] in ANCHOR_ROLES))
        if len(anchors) > 1:
            ops = " and ".join(f"{g.nodes[a].op} %{a}" for a in anchors)
            return f"second anchor ({ops})"
        out = self.escaping(members)
        if len(out) != 1:
            return "the group would have " + (
                f"{len(out)} outputs ({', '.join(f'%{n}' for n in sorted(out))})"
                if out else "no output")
        if not anchors:
            return None
        a = anchors[0]
        anode = g.nodes[a]
        r = self.roles[a]
        if r == "opaque":
            return f"{anode.op} is opaque and fuses with nothing" if len(members) > 1 else None
        pro = self.reach(a, members, up=True)
        epi = self.reach(a, members, up=False)
        if r in ("contraction", "attention"):
            reason = self._strided_prologue(a, members, pro)
            if reason:
                return reason
        asize = _numel(anode.type.shape)
        for m in sorted(members - pro - {a}):
            node = g.nodes[m]
            mr = self.roles[m]
            if m not in epi:
                continue  # a side input of the epilogue: elementwise/movement, computed inline
            if mr == "movement" and node.op not in STORE_REMAPS:
                return f"{node.op} %{m} cannot be an epilogue of {anode.op} (only " \
                       f"{'/'.join(STORE_REMAPS)} remap a store)"
            if mr == "elementwise" and _numel(node.type.shape) != asize:
                return (f"epilogue {node.op} %{m} broadcasts to {node.type}, bigger than the "
                        f"{anode.op} output {anode.type}")
        return None

    def reach(self, start: int, members: set[int], up: bool) -> set[int]:
        g = self.graph
        seen: set[int] = set()
        stack = [start]
        while stack:
            n = stack.pop()
            nxt = g.nodes[n].inputs if up else g.users(n)
            for m in nxt:
                if m in members and m not in seen:
                    seen.add(m)
                    stack.append(m)
        return seen

    def _strided_prologue(self, a: int, members: set[int], pro: set[int]) -> str | None:
        g = self.graph
        anode = g.nodes[a]
        data = DATA_OPERANDS.get(anode.op, (0, 1))
        covered: set[int] = set()
        for k, o in enumerate(anode.inputs):
            if o not in members:
                continue
            if k not in data:
                return (f"{anode.op} takes no prologue on operand {k} "
                        f"({g.nodes[o].op} %{o})")
            chain = []
            while o in members:
                node = g.nodes[o]
                if node.op not in STRIDED:
                    return (f"{anode.op} takes no {node.op} prologue (only "
                            f"{'/'.join(STRIDED)} chains it reads through strides)")
                chain.append(node)
                o = node.inputs[0]
            reason = _strided_view(g.nodes[o].type.shape, list(reversed(chain)))
            if reason:
                return f"{anode.op} operand {k}: {reason}"
            covered |= {n.id for n in chain}
        if pro - covered:
            extra = ", ".join(f"%{n}" for n in sorted(pro - covered))
            return f"{anode.op} prologue has nodes off its operand chains ({extra})"
        return None


def _strided_view(source_shape, chain) -> str | None:
    """``chain`` (movement nodes, source first) reads a contiguous ``source_shape`` as a
    strided view (views.py); a GEMM needs the unit-stride axis among the last two."""
    layout = chain_layout(source_shape, [chain_entry(n) for n in chain])
    if layout is None:
        return "its " + "/".join(dict.fromkeys(n.op for n in chain)) + \
            " chain is not a strided view (reading it would copy)"
    if chain and not any(size == 1 or stride == 1 for size, stride in layout[1][-2:]):
        return "the unit-stride axis is not one of the last two (not a GEMM operand)"
    return None


def _group_name(graph: Graph, members: list[int], anchor: int | None, pro: set[int]) -> str:
    ops = [graph.nodes[n].op for n in members]
    if anchor is None:
        names = ops
    else:
        before = []
        for n in members:
            if n in pro and graph.nodes[n].op not in before:
                before.append(graph.nodes[n].op)
        after = [graph.nodes[n].op for n in members if n != anchor and n not in pro]
        names = before + [graph.nodes[anchor].op] + after
    if len(names) > 8:
        names = names[:7] + [f"...({len(names) - 7} more)"]
    return "+".join(names)


def _build_body(graph: Graph, members: list[int], out: int, name: str):
    """The body subgraph and the group's external operands (in first-use order)."""
    body = Graph(name)
    mapping: dict[int, int] = {}
    operands: list[int] = []
    member_set = set(members)
    for n in members:
        for i in graph.nodes[n].inputs:
            if i in member_set or i in mapping:
                continue
            src = graph.nodes[i]
            value = graph.constants.get(i) if src.op == "constant" else None
            if value is not None and value.size <= INLINE_CONSTANT_SIZE:
                mapping[i] = body.add_constant(value, loc=src.loc,
                                               name=src.attrs.get("name")).id
                continue
            label = src.attrs.get("name") or f"arg{len(operands)}"
            mapping[i] = body.add_input(label, src.type, loc=src.loc).id
            operands.append(i)
    for n in members:
        node = graph.nodes[n]
        new = body.add_node(node.op, [mapping[i] for i in node.inputs], dict(node.attrs),
                            node.type, node.loc)
        mapping[n] = new.id
    body.outputs = [mapping[out]]
    return body, operands


# Index remaps cheap enough to repeat in every consumer (no data of their own read).
CLONED_VIEWS = ("reshape", "transpose", "slice")


def _unshare_views(graph: Graph) -> None:
    """A reshape / transpose / slice read by several elementwise or movement ops is made
    once per reader, so each joins its reader's kernel as an index remap (consumers
    first, so a chain of them is copied whole): otherwise it could join none of them and
    would join its producer as a remapped store, a GEMM's or attention's output then
    going through a copy (Llama's q / k heads, read three times by the rope). A
    transpose that moves the last axis is left shared (its readers' loads would be
    strided)."""
    outputs = set(graph.outputs)
    for n in reversed(graph.topo_order()):
        node = graph.nodes[n]
        if node.op not in CLONED_VIEWS or n in outputs:
            continue
        if node.op == "transpose" and node.attrs["axes"][-1] != node.type.rank - 1:
            continue
        users = graph.users(n)
        if len(users) < 2 or any(role(graph.nodes[u]) not in ("elementwise", "movement")
                                 for u in users):
            continue
        for u in users[1:]:
            clone = graph.add_node(node.op, list(node.inputs), dict(node.attrs), node.type,
                                   node.loc)
            graph.set_inputs(u, [clone.id if i == n else i for i in graph.nodes[u].inputs])


@register_pass("fuse")
def fuse(graph: Graph) -> Graph:
    _unshare_views(graph)
    order = graph.topo_order()
    pos = {n: k for k, n in enumerate(order)}
    comp = [n for n in order if graph.nodes[n].op not in NOT_COMPUTING]
    if not comp:
        return graph
    roles = {n: role(graph.nodes[n]) for n in comp}
    groups = _Groups(graph, comp)
    checker = _Checker(graph, roles)
    reasons: dict[tuple[int, int], list[str]] = {}
    outputs = set(graph.outputs)

    def refuse(p: int, n: int, why: str) -> bool:
        seen = reasons.setdefault((p, n), [])
        if why not in seen:
            seen.append(why)
        return False

    def try_merge(p: int, n: int) -> bool:
        """Try to put producer p's group and consumer n's group together."""
        gp, gn = groups.of[p], groups.of[n]
        if gp == gn:
            return False
        if roles[p] == "opaque" or roles[n] == "opaque":
            return refuse(p, n, "opaque ops fuse with nothing")
        if groups.would_cycle(gp, gn):
            return refuse(p, n, "would create a cycle")
        merged = groups.members[gp] | groups.members[gn]
        users = graph.users(p)
        if p in outputs:
            return refuse(p, n, "is a graph output")
        if any(u not in merged for u in users):
            return refuse(p, n, f"has {len(users)} users")
        why = checker.check(merged)
        if why:
            return refuse(p, n, why)
        groups.merge(gp, gn)
        reasons.pop((p, n), None)
        return True

    # (A) movement ops join their single consumer, consumers first.
    for n in reversed(comp):
        if roles[n] != "movement" or n in outputs:
            continue
        users = graph.users(n)
        if len(users) == 1 and users[0] in groups.of:
            try_merge(n, users[0])
    # (B) consumers join their producers' groups, to a fixed point.
    changed = True
    while changed:
        changed = False
        for n in comp:
            for p in dict.fromkeys(graph.nodes[n].inputs):
                if p in groups.of and groups.of[p] != groups.of[n]:
                    changed |= try_merge(p, n)

    for (p, n), whys in sorted(reasons.items()):
        why = "; ".join(whys)
        if groups.of[p] != groups.of[n]:
            note("not_fused", f"%{p} ({graph.nodes[p].op}) not fused with its user %{n} "
                 f"({graph.nodes[n].op}): {why}", node=f"%{p}", user=f"%{n}", reason=why)

    # Emit one fused node per group, in topological order of the group graph.
    first = {g: min(pos[m] for m in ms) for g, ms in groups.members.items()}
    replaced: dict[int, int] = {}
    count = 0
    for gid in nx.lexicographical_topological_sort(groups.gg, key=lambda g: first[g]):
        members = sorted(groups.members[gid], key=pos.__getitem__)
        if len(members) == 1 and graph.nodes[members[0]].op == "fused":
            # Already a group (fuse ran before): keep it, reading the new groups.
            graph.set_inputs(members[0], [replaced.get(i, i)
                                          for i in graph.nodes[members[0]].inputs])
            continue
        escaping = checker.escaping(set(members))
        if not escaping:
            continue  # dead code (nothing reads it): dce's business, not a kernel
        (out,) = escaping
        anchors = [m for m in members if roles[m] in ANCHOR_ROLES]
        anchor = anchors[0] if anchors else None
        if anchor is None:
            kind = "movement" if all(roles[m] == "movement" for m in members) \
                else "elementwise"
            pro: set[int] = set()
        else:
            kind = "attention" if roles[anchor] == "attention" else roles[anchor]
            pro = checker.reach(anchor, set(members), up=True)
        name = _group_name(graph, members, anchor, pro)
        body, operands = _build_body(graph, members, out, name)
        onode = graph.nodes[out]
        loc = graph.nodes[anchor].loc if anchor is not None else onode.loc
        new = graph.add_node("fused", [replaced.get(o, o) for o in operands],
                             {"body": body, "kind": kind}, onode.type, loc)
        new.meta.update(group=name, members=list(members),
                        anchor=graph.nodes[anchor].op if anchor is not None else None)
        replaced[out] = new.id
        count += 1
        note("group", f"{name} ({kind}): " + ", ".join(f"%{m}" for m in members),
             group=name, group_kind=kind, members=list(members))
    graph.outputs = [replaced.get(o, o) for o in graph.outputs]
    from .rewrite import remove_dead
    remove_dead(graph)
    graph.meta["fusion"] = {"groups": count}
    return graph
