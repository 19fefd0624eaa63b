"""The ``fuse_patterns`` pass: apply the named rewrite rules (rules.py, and any a user
registers with ``register_rule``) until none fires."""
from __future__ import annotations

from .manager import explaining, note, register_pass
from .patterns import all_rules, try_rule
from .rewrite import remove_dead

MAX_ROUNDS = 20


@register_pass("fuse_patterns")
def fuse_patterns(graph):
    rules = [r for r in all_rules() if r.enabled]
    for _ in range(MAX_ROUNDS):
        fired = False
        # Consumers first, so the largest pattern claims a node before a smaller one
        # nested inside it (relu(x @ w + b) before x @ w + b).
        for nid in reversed(graph.topo_order()):
            if nid not in graph.nodes or (not graph.users(nid) and nid not in graph.outputs):
                continue  # removed, or made dead by an earlier rewrite
            node = graph.nodes[nid]
            for rule in rules:
                if node.op not in rule.root_ops:
                    continue
                new, why = try_rule(graph, rule, nid)
                if new is not None:
                    note("fired", f"{rule.name} at {node.name} ({node.loc})", rule=rule.name,
                         node=node.name, new=f"%{new}")
                    fired = True
                    remove_dead(graph)  # so the nodes it replaced are not matched again
                    break
                if explaining():
                    note("missed", f"{rule.name} not at {node.name} ({node.loc}): {why}",
                         rule=rule.name, node=node.name, reason=why)
        remove_dead(graph)
        if not fired:
            break
    return graph
