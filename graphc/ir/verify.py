"""``verify(graph)``: types, acyclicity and use-def consistency."""
from __future__ import annotations

import networkx as nx

from ..errors import GraphcError, VerifyError


def verify(graph) -> None:
    """Raise :class:`VerifyError` if ``graph`` breaks an IR invariant:

    * every operand and output names a node of the graph; inputs are ``input`` nodes and
      every ``constant`` has a value of its declared type;
    * the networkx edges are exactly the nodes' operands (use-def consistency);
    * the graph is acyclic;
    * every node's type is what its op's type inference gives for its operands.
    """
    from ..ops.registry import get_op

    def fail(msg, node=None):
        raise VerifyError(f"{graph.name}: {msg}", node=node.name if node else None,
                          op=node.op if node else None, loc=node.loc if node else None)

    for o in graph.outputs:
        if o not in graph.nodes:
            fail(f"output %{o} is not a node")
    for i in graph.inputs:
        if i not in graph.nodes or graph.nodes[i].op != "input":
            fail(f"graph input %{i} is not an input node")
    if set(graph.nx.nodes) != set(graph.nodes):
        fail("networkx nodes differ from graph nodes")
    for node in graph.nodes.values():
        for i in node.inputs:
            if i not in graph.nodes:
                fail(f"operand %{i} does not exist", node)
        edges = sorted((k, u) for u, _, k in graph.nx.in_edges(node.id, keys=True))
        if edges != list(enumerate(node.inputs)):
            fail(f"edges {edges} do not match operands {node.inputs}", node)
        if node.op == "input" and node.id not in graph.inputs:
            fail("input node is not listed in graph.inputs", node)
        if node.op == "constant":
            value = graph.constants.get(node.id)
            if value is None:
                fail("constant has no value", node)
            if value.shape != node.type.shape or value.dtype != node.type.np_dtype:
                fail(f"constant value {value.dtype}{list(value.shape)} does not match "
                     f"{node.type}", node)
    if not nx.is_directed_acyclic_graph(graph.nx):
        cycle = nx.find_cycle(graph.nx)
        fail(f"cycle through {' -> '.join(f'%{u}' for u, *_ in cycle)}")
    for node in graph.nodes.values():
        if node.op in ("input", "constant"):
            continue
        op = get_op(node.op, node.loc)
        attrs = dict(node.attrs)
        try:
            t = op.infer([graph.nodes[i].type for i in node.inputs], attrs)
        except GraphcError as e:
            fail(f"type inference fails: {e.message}", node)
        if t != node.type:
            fail(f"declared type {node.type} but operands give {t}", node)


__all__ = ["verify"]
