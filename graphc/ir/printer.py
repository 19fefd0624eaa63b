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


def _esc(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"')


def _dot_label(node, within=None) -> str:
    """The label of a node: its id (``%group.id`` inside a fused group's body), op, the
    name of an input or a constant, its type and the user's line."""
    head = f"%{within}.{node.id} {node.op}" if within is not None else f"%{node.id} {node.op}"
    if node.op in ("input", "constant") and node.attrs.get("name"):
        head += f" {node.attrs['name']}"
    lines = [head, str(node.type)]
    if node.loc is not None and node.op not in ("input", "constant"):
        lines.append(str(node.loc).rsplit("/", 1)[-1])
    return "\\n".join(_esc(x) for x in lines)


def to_dot(graph) -> str:
    """Graphviz DOT text of ``graph`` (render with ``dot -Tsvg``; ``graphc show --svg``
    does): inputs blue, constants grey (with their names),
    outputs green; every fused group a cluster labelled with its group name, kind and
    member ops, holding the nodes of its body (edges go from the producers outside to the
    body nodes that read them)."""
    lines = [f'digraph "{_esc(graph.name)}" {{', "  rankdir=TB;", "  compound=true;",
             '  node [shape=box, fontname="monospace", fontsize=10];']
    outputs = set(graph.outputs)
    end = {}                            # outer node id -> the DOT node of its value
    edges = []
    for node in graph:
        if node.op == "fused" and "body" in node.attrs:
            body = node.attrs["body"]
            group = node.meta.get("group") or body.name
            members = [b.op for b in body if b.op not in ("input", "constant")]
            kind = node.attrs.get("kind", "")
            lines.append(f"  subgraph cluster_{node.id} {{")
            lines.append(f'    label="{_esc(f"%{node.id} group {group}" + (f" ({kind})" if kind else ""))}'
                         f'\\n{_esc("members: " + ", ".join(members))}";')
            lines.append('    style="rounded,filled"; fillcolor="#fff6dd"; color="#c99a2e"; '
                         'fontname="monospace"; fontsize=10;')
            feeds = dict(zip(body.inputs, node.inputs))
            for b in body:
                if b.id in feeds:
                    continue
                style = ""
                if b.op == "constant":
                    style = ', style=filled, fillcolor="#eeeeee"'
                elif node.id in outputs and b.id in body.outputs:
                    style = ', style=filled, fillcolor="#d8f5d0"'
                lines.append(f'    f{node.id}_{b.id} [label="{_dot_label(b, node.id)}"{style}];')
                for i in b.inputs:
                    src = end.get(feeds[i]) if i in feeds else f"f{node.id}_{i}"
                    if src is not None:
                        edges.append(f"  {src} -> f{node.id}_{b.id};")
            lines.append("  }")
            end[node.id] = f"f{node.id}_{body.outputs[0]}"
            continue
        style = ""
        if node.op == "input":
            style = ', style=filled, fillcolor="#d0e8ff"'
        elif node.op == "constant":
            style = ', style=filled, fillcolor="#eeeeee"'
        elif node.id in outputs:
            style = ', style=filled, fillcolor="#d8f5d0"'
        lines.append(f'  n{node.id} [label="{_dot_label(node)}"{style}];')
        end[node.id] = f"n{node.id}"
        for i in node.inputs:
            edges.append(f"  {end[i]} -> n{node.id};")
    lines += edges
    lines.append("}")
    return "\n".join(lines) + "\n"
