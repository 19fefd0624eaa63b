"""Importing this module registers every built-in pass, and declares what each keeps and
how to tell that a graph already has its result (manager.py: ``preserves`` / ``holds``).

The built-in passes declare no hard ``requires`` on each other: each runs on any graph
(``schedule`` and ``plan_memory`` order and plan unfused graphs too). What needs them is
lowering, whose requirement ``fuse -> schedule -> plan_memory`` the pipeline of a compiled
backend gets (graphc.runtime.backends.LOWERING_REQUIRES).
"""
from . import cse, dce, decompose, fold, simplify  # noqa: F401
from . import fuse_patterns  # noqa: F401
from . import fuse  # noqa: F401
from . import schedule  # noqa: F401
from . import plan_memory  # noqa: F401
from .manager import ALL, declare_pass

_NOT_COMPUTING = ("input", "constant")


def _fused(graph) -> bool:
    """Every computing node is a ``fused`` node (what lowering takes)."""
    return all(n.op == "fused" for n in graph.nodes.values() if n.op not in _NOT_COMPUTING)


def _scheduled(graph) -> bool:
    return "schedule" in graph.meta


def _planned(graph) -> bool:
    return "memory" in graph.meta


# fuse: a graph is fused when every computing node is a fused node.
declare_pass("fuse", holds=_fused)
# schedule renumbers the nodes in the chosen order and keeps the groups; it drops a
# memory plan (whose node ids would be stale).
declare_pass("schedule", preserves=("fuse",), holds=_scheduled)
# plan_memory only records graph.meta["memory"]: every earlier result stays.
declare_pass("plan_memory", preserves=ALL, holds=_planned)
