"""A small declarative pattern language over the IR, and the rewrite pass that applies
named rules (``fuse_patterns``).

    x, w, b = Var("x"), Var("w"), Var("b")
    pat = Op("relu", Op("add", Op("matmul", x, w), b, commutative=True))
    rule = Rule("relu(x @ w + b) => gemm", pat,
                build=lambda m: graphc.ops.gemm(m["x"], m["w"], m["b"], activation="relu"))
    register_rule(rule)

* ``Var(name, check=None)`` matches any node and captures it; a name used twice must match
  the same node. ``check(graph, node) -> None | str`` returns a reason to refuse.
* ``Op(op_or_ops, *operands, name=None, commutative=False, **attrs)`` matches a node with
  that op (or one of a tuple of ops), whose operands match; each attr is a value to equal or
  a predicate ``f(value, node, graph) -> bool``. ``name`` captures the node itself.
* ``Alt(p1, p2, ...)`` tries alternatives in order; ``opt_scale(p)`` is ``scale(p)`` or
  ``p`` (captures the scale node as ``"scale"``).

A rule fires only when every node it replaces, other than the root, has no user outside
the match (so no computation is duplicated), and ``rule.check`` accepts. When a candidate
(a node with the root's op) does not match, the explain log says where and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..ir.node import capture_loc
from ..errors import GraphcError, RegistrationError
from ..frontend.tracer import Builder, building
from ..ir.graph import Graph


class Pat:
    pass


@dataclass
class Var(Pat):
    name: str
    check: Callable | None = None


class Op(Pat):
    def __init__(self, op, *operands: Pat, name: str | None = None,
                 commutative: bool = False, **attrs):
        self.ops = (op,) if isinstance(op, str) else tuple(op)
        self.operands = operands
        self.name = name
        self.commutative = commutative
        self.attrs = attrs

    def __repr__(self):
        return f"{'|'.join(self.ops)}({', '.join(map(repr, self.operands))})"


class Alt(Pat):
    def __init__(self, *alts: Pat):
        self.alts = alts


def opt_scale(p: Pat) -> Pat:
    """``scale(p)`` or ``p``."""
    return Alt(Op("scale", p, name="scale"), p)


class Match:
    """Captures (name -> node id) and the ids of every node an Op pattern matched."""

    def __init__(self, graph: Graph, root: int):
        self.graph = graph
        self.root = root
        self.captures: dict[str, int] = {}
        self.nodes: set[int] = set()
        self._builder: Builder | None = None

    def __getitem__(self, name: str):
        """The captured node as a Tensor (inside ``build``) for use with graphc ops."""
        return self._builder.wrap(self.captures[name])

    def node(self, name: str):
        return self.graph.nodes[self.captures[name]]

    def has(self, name: str) -> bool:
        return name in self.captures

    def copy(self) -> "Match":
        m = Match(self.graph, self.root)
        m.captures = dict(self.captures)
        m.nodes = set(self.nodes)
        return m


class _Fail(Exception):
    def __init__(self, reason: str, depth: int):
        super().__init__(reason)
        self.reason = reason
        self.depth = depth


def _match(p: Pat, nid: int, m: Match, depth: int) -> Match:
    g = m.graph
    node = g.nodes[nid]
    if isinstance(p, Var):
        if p.name in m.captures and m.captures[p.name] != nid:
            raise _Fail(f"{node.name} should be the same node as {p.name} = "
                        f"%{m.captures[p.name]}", depth)
        if p.check is not None:
            why = p.check(g, node)
            if why:
                raise _Fail(f"{p.name} = {node.name}: {why}", depth)
        m.captures[p.name] = nid
        return m
    if isinstance(p, Alt):
        best = None
        for alt in p.alts:
            try:
                return _match(alt, nid, m.copy(), depth)
            except _Fail as f:
                if best is None or f.depth > best.depth:
                    best = f
        raise best
    assert isinstance(p, Op)
    if node.op not in p.ops:
        raise _Fail(f"expected {'|'.join(p.ops)} at {node.name}, found {node.op}", depth)
    for k, want in p.attrs.items():
        have = node.attrs.get(k)
        ok = want(have, node, g) if callable(want) else have == want
        if not ok:
            raise _Fail(f"{node.name} ({node.op}) has {k}={have!r}", depth)
    if len(node.inputs) != len(p.operands):
        raise _Fail(f"{node.name} ({node.op}) has {len(node.inputs)} operands", depth)
    orders = [node.inputs]
    if p.commutative and len(node.inputs) == 2:
        orders.append(node.inputs[::-1])
    best = None
    for ins in orders:
        mm = m.copy()
        try:
            for sub, i in zip(p.operands, ins):
                mm = _match(sub, i, mm, depth + 1)
        except _Fail as f:
            if best is None or f.depth > best.depth:
                best = f
            continue
        mm.nodes.add(nid)
        if p.name:
            mm.captures[p.name] = nid
        return mm
    raise best


def match(pattern: Pat, graph: Graph, nid: int) -> tuple[Match | None, str]:
    """Match ``pattern`` rooted at node ``nid``: (match, "") or (None, reason)."""
    try:
        return _match(pattern, nid, Match(graph, nid), 0), ""
    except _Fail as f:
        return None, f.reason


def last_axis(value, node, graph) -> bool:
    """Predicate for a reduction/softmax attr: exactly the operand's last axis."""
    rank = graph.nodes[node.inputs[0]].type.rank
    return value in (rank - 1, (rank - 1,))


def keepdims(value, node, graph) -> bool:
    return bool(value)


@dataclass
class Rule:
    """A named rewrite: ``pattern`` rooted at one node, replaced by ``build(match)``
    (frontend calls on ``match[name]`` tensors). ``check(match) -> None | str`` can refuse
    with a reason."""

    name: str
    pattern: Op
    build: Callable[[Match], Any]
    check: Callable[[Match], str | None] | None = None
    enabled: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def root_ops(self) -> tuple[str, ...]:
        return self.pattern.ops


_RULES: list[Rule] = []


def register_rule(rule: Rule) -> Rule:
    """Add a rule to the ``fuse_patterns`` pass (rules are tried in registration order)."""
    if any(r.name == rule.name for r in _RULES):
        raise RegistrationError(f"a rule named {rule.name!r} is already registered",
                                loc=capture_loc())
    _RULES.append(rule)
    return rule


def unregister_rule(name: str) -> None:
    _RULES[:] = [r for r in _RULES if r.name != name]


def all_rules() -> list[Rule]:
    from . import rules  # noqa: F401  (registers the built-in rules)
    return list(_RULES)


def try_rule(graph: Graph, rule: Rule, nid: int) -> tuple[int | None, str]:
    """Apply ``rule`` at ``nid`` if it matches: (new node id, "") or (None, reason)."""
    m, why = match(rule.pattern, graph, nid)
    if m is None:
        return None, why
    # Every node an Op pattern matched is replaced; none may be needed elsewhere, except
    # nullary generators (a causal mask), which the replacement recomputes for free.
    for inner in sorted(m.nodes - {nid}):
        if not graph.nodes[inner].inputs:
            continue
        outside = [u for u in graph.users(inner) if u not in m.nodes]
        if outside or inner in graph.outputs:
            users = ", ".join(f"%{u}" for u in outside) or "the graph output"
            return None, (f"{graph.nodes[inner].name} ({graph.nodes[inner].op}) inside the "
                          f"pattern is also used by {users}; fusing would compute it twice")
    if rule.check is not None:
        why = rule.check(m)
        if why:
            return None, why
    node = graph.nodes[nid]
    b = Builder(graph, loc=node.loc)
    m._builder = b
    mark = graph._next_id
    try:
        with building(b):
            out = rule.build(m)
    except GraphcError as e:
        _drop_new(graph, mark)
        return None, f"replacement does not type-check: {e.message}"
    new_id = out.id
    if graph.nodes[new_id].type != node.type:
        _drop_new(graph, mark)
        return None, (f"replacement type {graph.nodes[new_id].type} differs from "
                      f"{node.type}")
    graph.replace_all_uses(nid, new_id)
    return new_id, ""


def _drop_new(graph: Graph, mark: int) -> None:
    for nid in sorted((n for n in graph.nodes if n >= mark), reverse=True):
        if not graph.users(nid):
            graph.remove_node(nid)
