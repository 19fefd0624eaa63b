"""A small declarative pattern language over the IR; rewrite rules as values.

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
the match (so no computation is duplicated; ``Rule(..., exclusive=False)`` lifts this for
rewrites that copy nothing, such as collapsing ``transpose(transpose(x))``), and
``rule.check`` accepts. When a candidate (a node with the root's op) does not match, the
explain log says where and why.

Rules are values: a :class:`RuleSet` is an ordered, named collection, and sets combine
with ``+`` (as tinygrad's pattern matchers do): ``simplify.RULES + my_rules``.
:func:`apply` rewrites a graph with any rule set until none fires, so any pass can use
one. ``register_rule`` adds a rule to the set ``fuse_patterns`` applies
(:func:`fusion_rules`); ``simplify`` applies its own set (``simplify.RULES``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

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
    (frontend calls on ``match[name]`` tensors, or a captured tensor itself).
    ``check(match) -> None | str`` can refuse with a reason. ``exclusive``: every node
    the pattern matched besides the root must have no user outside the match (True: the
    fusion rules, which would otherwise compute those nodes twice)."""

    name: str
    pattern: Op
    build: Callable[[Match], Any]
    check: Callable[[Match], str | None] | None = None
    enabled: bool = True
    extra: dict = field(default_factory=dict)
    exclusive: bool = True

    @property
    def root_ops(self) -> tuple[str, ...]:
        return self.pattern.ops

    def __add__(self, other) -> "RuleSet":
        return RuleSet([self]) + other

    def __radd__(self, other) -> "RuleSet":
        return _as_ruleset(other) + self


class RuleSet:
    """An ordered collection of rules with unique names; ``a + b`` is a new set with
    ``a``'s rules then ``b``'s (a Rule, a RuleSet or a list of rules); the same rule
    object in both is kept once, two different rules with one name are an error. Rules
    are tried in this order at each node (among those whose root op matches)."""

    def __init__(self, rules: Iterable[Rule] = (), name: str = ""):
        self.name = name
        self._rules: list[Rule] = []
        for r in rules:
            self._add(r)

    def _add(self, rule: Rule) -> None:
        if not isinstance(rule, Rule):
            raise TypeError(f"a RuleSet holds Rules, not {type(rule).__name__}")
        for have in self._rules:
            if have is rule:
                return
            if have.name == rule.name:
                raise RegistrationError(f"two different rules are named {rule.name!r}",
                                        loc=capture_loc())
        self._rules.append(rule)

    def __add__(self, other) -> "RuleSet":
        out = RuleSet(self._rules, self.name)
        for r in _as_ruleset(other):
            out._add(r)
        names = [n for n in (self.name, getattr(other, "name", "")) if n]
        out.name = " + ".join(names)
        return out

    def __radd__(self, other) -> "RuleSet":
        return _as_ruleset(other) + self

    def __iter__(self):
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name) -> bool:
        return any(r.name == name or r is name for r in self._rules)

    def __getitem__(self, name: str) -> Rule:
        for r in self._rules:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._rules]

    def without(self, *names: str) -> "RuleSet":
        """The set less the rules named."""
        return RuleSet([r for r in self._rules if r.name not in names], self.name)

    def by_root_op(self) -> dict[str, list[Rule]]:
        """op -> the enabled rules whose pattern is rooted at that op, in order."""
        table: dict[str, list[Rule]] = {}
        for r in self._rules:
            if r.enabled:
                for op in r.root_ops:
                    table.setdefault(op, []).append(r)
        return table

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"RuleSet{label}({len(self._rules)} rules: {', '.join(self.names)})"


def _as_ruleset(value) -> RuleSet:
    if isinstance(value, RuleSet):
        return value
    if isinstance(value, Rule):
        return RuleSet([value])
    if value == 0:          # sum(rule_sets) starts from 0
        return RuleSet()
    return RuleSet(value)


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
    """Every rule registered for ``fuse_patterns`` (the built-in ones first)."""
    from . import rules  # noqa: F401  (registers the built-in rules)
    return list(_RULES)


def fusion_rules() -> RuleSet:
    """The rules ``fuse_patterns`` applies, as a RuleSet: the built-in ones
    (rules.py) and any registered with :func:`register_rule`."""
    return RuleSet(all_rules(), "fuse_patterns")


def try_rule(graph: Graph, rule: Rule, nid: int) -> tuple[int | None, str]:
    """Apply ``rule`` at ``nid`` if it matches: (new node id, "") or (None, reason)."""
    m, why = match(rule.pattern, graph, nid)
    if m is None:
        return None, why
    # Every node an Op pattern matched is replaced; none may be needed elsewhere, except
    # nullary generators (a causal mask), which the replacement recomputes for free.
    for inner in (sorted(m.nodes - {nid}) if rule.exclusive else ()):
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


MAX_ROUNDS = 20


def apply(graph: Graph, rules, *, consumers_first: bool = True,
          max_rounds: int = MAX_ROUNDS, prune_each: bool = True, skip_dead: bool = True,
          explain: bool = True) -> int:
    """Rewrite ``graph`` in place with ``rules`` (a RuleSet, a Rule or a list of them)
    until none fires (at most ``max_rounds`` sweeps); return how many rewrites fired.

    Each sweep visits every live node once, consumers first by default (so the largest
    pattern claims a node before a smaller one nested inside it: ``relu(x @ w + b)``
    before ``x @ w + b``), or producers first (``consumers_first=False``: simplification,
    where a rewrite of an operand should be seen by its user in the same sweep). At a node
    the rules rooted at its op are tried in order and the first that fires wins.
    Dead nodes are removed after every rewrite (``prune_each``) or after every sweep;
    ``skip_dead``: do not try rules at nodes no output needs any more.
    ``explain``: record ``fired`` / ``missed`` events for the Explain instrument."""
    from .manager import explaining, note
    from .rewrite import remove_dead
    table = _as_ruleset(rules).by_root_op()
    count = 0
    for _ in range(max_rounds):
        fired = False
        order = graph.topo_order()
        for nid in (reversed(order) if consumers_first else order):
            node = graph.nodes.get(nid)
            if node is None or (skip_dead and not graph.users(nid)
                                and nid not in graph.outputs):
                continue  # removed, or made dead by an earlier rewrite
            for rule in table.get(node.op, ()):
                new, why = try_rule(graph, rule, nid)
                if new is not None:
                    if explain:
                        note("fired", f"{rule.name} at {node.name} ({node.loc})",
                             rule=rule.name, node=node.name, new=f"%{new}")
                    fired = True
                    count += 1
                    if prune_each:
                        remove_dead(graph)  # so the nodes it replaced are not matched again
                    break
                if explain and explaining():
                    note("missed", f"{rule.name} not at {node.name} ({node.loc}): {why}",
                         rule=rule.name, node=node.name, reason=why)
        remove_dead(graph)
        if not fired:
            break
    return count
