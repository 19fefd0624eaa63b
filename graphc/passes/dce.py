"""Dead code elimination: drop nodes no output depends on (networkx ancestors)."""
from .manager import note, register_pass
from .rewrite import remove_dead


@register_pass("dce")
def dce(graph):
    n = remove_dead(graph)
    if n:
        note("dce", f"removed {n} dead nodes")
    return graph
