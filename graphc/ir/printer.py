"""Readable text and DOT renderings of a Graph."""
from __future__ import annotations

import numpy as np

from .dims import Sym


def format_attr(v) -> str:
    if isinstance(v, (list, tuple)):
        inner = ", ".join(format_attr(x) for x in v)
        return f"({inner}{',' if len(v) == 1 else ''})" if isinstance(v, tuple) else f"[{inner}]"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, Sym):
        return str(v)
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}"
    if hasattr(v, "nodes") and hasattr(v, "outputs"):  # a subgraph (fusion group body)
        n_ops = sum(1 for n in v.nodes.values() if n.op not in ("input", "constant"))
        return f"<{n_ops} ops>"
    return str(v)


def format_node(graph, node) -> str:
    args = [f"%{i}" for i in node.inputs]
    attrs = {k: v for k, v in node.attrs.items() if not k.startswith("_")}
    args += [f"{k}={format_attr(v)}" for k, v in attrs.items()]
    line = f"%{node.id} = {node.op}({', '.join(args)}) : {node.type}"
    notes = []
    if node.loc is not None:
        notes.append(str(node.loc))
    group = node.meta.get("group")
    if group is not None:
        notes.append(f"group {group}")
    if notes:
        line += "  # " + ", ".join(notes)
    return line


def format_graph(graph, indent: str = "") -> str:
    """The graph, one line per node; subgraphs (fusion group bodies) nested below the
    node that holds them."""
    ins = ", ".join(f"%{i}: {graph.nodes[i].type}" for i in graph.inputs)
    outs = ", ".join(f"%{o}" for o in graph.outputs)
    lines = [f"{indent}graph {graph.name}({ins}) -> ({outs}) {{"]
    for node in graph:
        lines.append(indent + "  " + format_node(graph, node))
        for v in node.attrs.values():
            if hasattr(v, "nodes") and hasattr(v, "outputs"):
                lines.append(format_graph(v, indent + "    "))
    lines.append(indent + "}")
    return "\n".join(lines)


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(graph) -> str:
    """Graphviz DOT text (render with ``dot -Tsvg``)."""
    lines = [f'digraph "{_dot_escape(graph.name)}" {{', "  rankdir=TB;",
             '  node [shape=box, fontname="monospace", fontsize=10];']
    outputs = set(graph.outputs)
    for node in graph:
        label = f"%{node.id} {node.op}\\n{_dot_escape(str(node.type))}"
        style = ""
        if node.op == "input":
            style = ', style=filled, fillcolor="#d0e8ff"'
            label = f"%{node.id} input {_dot_escape(node.attrs['name'])}\\n{node.type}"
        elif node.op == "constant":
            style = ', style=filled, fillcolor="#eeeeee"'
        elif node.id in outputs:
            style = ', style=filled, fillcolor="#d8f5d0"'
        lines.append(f'  n{node.id} [label="{label}"{style}];')
    for src, dst, key in graph.nx.edges(keys=True):
        lines.append(f"  n{src} -> n{dst};")
    lines.append("}")
    return "\n".join(lines) + "\n"
