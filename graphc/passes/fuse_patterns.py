"""The ``fuse_patterns`` pass: apply the named rewrite rules (rules.py, and any a user
registers with ``register_rule``: :func:`patterns.fusion_rules`) until none fires."""
from __future__ import annotations

from .manager import register_pass
from .patterns import MAX_ROUNDS, apply, fusion_rules  # noqa: F401


@register_pass("fuse_patterns")
def fuse_patterns(graph):
    # Consumers first, so the largest pattern claims a node before a smaller one nested
    # inside it (relu(x @ w + b) before x @ w + b).
    apply(graph, fusion_rules(), consumers_first=True)
    return graph
