"""The Graph: typed SSA nodes, with edges held in a networkx MultiDiGraph."""
from __future__ import annotations

import copy as _copy
from typing import Any, Iterable

import networkx as nx
import numpy as np

from .node import Node, SourceLoc
from .types import TensorType


class Graph:
    """A traced program.

    * ``nodes``: id -> Node. Inputs are nodes with op ``input`` (attr ``name``); weights
      are nodes with op ``constant`` whose value is ``constants[id]``.
    * ``inputs`` / ``outputs``: node ids, in call / return order.
    * ``nx``: MultiDiGraph with an edge producer -> consumer per operand (key = operand
      index), kept in sync by the mutating methods below. Use it for graph algorithms.
    """

    def __init__(self, name: str = "graph"):
        self.name = name
        self.nodes: dict[int, Node] = {}
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.constants: dict[int, np.ndarray] = {}
        self.nx = nx.MultiDiGraph()
        self.meta: dict[str, Any] = {}
        self._next_id = 0

    # -- building ---------------------------------------------------------------------
    def add_node(self, op: str, inputs: Iterable[int], attrs: dict[str, Any],
                 type: TensorType, loc: SourceLoc | None = None) -> Node:
        inputs = tuple(inputs)
        for i in inputs:
            if i not in self.nodes:
                raise KeyError(f"input %{i} is not in graph {self.name}")
        node = Node(self._next_id, op, inputs, dict(attrs), type, loc)
        self._next_id += 1
        self.nodes[node.id] = node
        self.nx.add_node(node.id)
        for k, i in enumerate(inputs):
            self.nx.add_edge(i, node.id, key=k)
        return node

    def add_input(self, name: str, type: TensorType, loc: SourceLoc | None = None) -> Node:
        node = self.add_node("input", (), {"name": name}, type, loc)
        self.inputs.append(node.id)
        return node

    def add_constant(self, value: np.ndarray, loc: SourceLoc | None = None,
                     name: str | None = None) -> Node:
        value = np.asarray(value)
        type = TensorType(value.shape, value.dtype)
        attrs = {"name": name} if name else {}
        node = self.add_node("constant", (), attrs, type, loc)
        self.constants[node.id] = value
        return node

    # -- mutation (for passes) ----------------------------------------------------------
    def set_inputs(self, node_id: int, inputs: Iterable[int]) -> None:
        node = self.nodes[node_id]
        for k, i in enumerate(node.inputs):
            self.nx.remove_edge(i, node_id, key=k)
        node.inputs = tuple(inputs)
        for k, i in enumerate(node.inputs):
            self.nx.add_edge(i, node_id, key=k)

    def users(self, node_id: int) -> list[int]:
        """Distinct consumers of a node, in id order."""
        return sorted(set(self.nx.successors(node_id)))

    def replace_all_uses(self, old: int, new: int) -> None:
        """Make every consumer (and graph output) of ``old`` read ``new`` instead."""
        if old == new:
            return
        for u in self.users(old):
            self.set_inputs(u, [new if i == old else i for i in self.nodes[u].inputs])
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove_node(self, node_id: int) -> None:
        if self.users(node_id):
            raise ValueError(f"%{node_id} still has users")
        if node_id in self.outputs or node_id in self.inputs:
            raise ValueError(f"%{node_id} is a graph input or output")
        self.nx.remove_node(node_id)
        del self.nodes[node_id]
        self.constants.pop(node_id, None)

    # -- queries ------------------------------------------------------------------------
    def topo_order(self) -> list[int]:
        """Node ids in a topological order, ties broken by id (stable, deterministic)."""
        return list(nx.lexicographical_topological_sort(self.nx))

    def __iter__(self):
        return (self.nodes[i] for i in self.topo_order())

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    @property
    def input_types(self) -> list[TensorType]:
        return [self.nodes[i].type for i in self.inputs]

    @property
    def output_types(self) -> list[TensorType]:
        return [self.nodes[i].type for i in self.outputs]

    @property
    def input_names(self) -> list[str]:
        return [self.nodes[i].attrs["name"] for i in self.inputs]

    def op_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes.values():
            out[n.op] = out.get(n.op, 0) + 1
        return out

    def copy(self) -> "Graph":
        """A deep copy of the structure; constant arrays are shared (they are never
        mutated in place; passes that fold make new arrays)."""
        g = Graph(self.name)
        g.nodes = {i: Node(n.id, n.op, n.inputs, dict(n.attrs), n.type, n.loc,
                           _copy.deepcopy(n.meta)) for i, n in self.nodes.items()}
        g.inputs = list(self.inputs)
        g.outputs = list(self.outputs)
        g.constants = dict(self.constants)
        g.nx = self.nx.copy()
        g.meta = dict(self.meta)
        g._next_id = self._next_id
        return g

    # -- printing -----------------------------------------------------------------------
    def __str__(self) -> str:
        from .printer import format_graph
        return format_graph(self)

    def to_dot(self) -> str:
        from .printer import to_dot
        return to_dot(self)

    def __repr__(self) -> str:
        return f"<graphc.Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes>"
