"""The text form of a Graph (one line per op) and its DOT export."""
import inspect
import os
import re
import shutil
import subprocess
from collections import Counter

import numpy as np

import graphc

HERE = os.path.basename(__file__)


def traced():
    """x [S,4] -> softmax((x @ w) * 0.5, axis=-1), with the line of each op."""
    w = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    lines = {}

    def fn(x):
        lines["matmul"] = inspect.currentframe().f_lineno + 1
        h = x @ graphc.constant(w, name="w")
        lines["scale"] = inspect.currentframe().f_lineno + 1
        h = h * 0.5
        lines["softmax"] = inspect.currentframe().f_lineno + 1
        return graphc.softmax(h, axis=-1)

    lines["trace"] = inspect.currentframe().f_lineno + 1
    g = graphc.trace(fn, graphc.spec(("S", 4)))
    return g, lines


def test_text_form_one_line_per_op():
    g, lines = traced()
    text = str(g)
    assert text.splitlines() == [
        "graph fn(%0: f32[S,4]) -> (%4) {",
        f"  %0 = input(name='x') : f32[S,4]  # {HERE}:{lines['trace']}",
        f"  %1 = constant(name='w') : f32[4,4]  # {HERE}:{lines['matmul']}",
        f"  %2 = matmul(%0, %1) : f32[S,4]  # {HERE}:{lines['matmul']}",
        f"  %3 = scale(%2, factor=0.5) : f32[S,4]  # {HERE}:{lines['scale']}",
        f"  %4 = softmax(%3, axis=1) : f32[S,4]  # {HERE}:{lines['softmax']}",
        "}",
    ]


def test_text_form_of_movement_attrs_and_several_outputs():
    lines = {}

    def fn(x):
        lines["op"] = inspect.currentframe().f_lineno + 1
        return x.reshape(-1, 2).T, x[1:]

    g = graphc.trace(fn, graphc.spec(("S", 4), "float64"))
    body = str(g).splitlines()
    assert body[0] == "graph fn(%0: f64[S,4]) -> (%2, %3) {"
    assert body[2] == f"  %1 = reshape(%0, shape=(2*S, 2)) : f64[2*S,2]  # {HERE}:{lines['op']}"
    assert body[3] == f"  %2 = transpose(%1, axes=(1, 0)) : f64[2,2*S]  # {HERE}:{lines['op']}"
    assert body[4] == (f"  %3 = slice(%0, starts=(1, 0), stops=(S, 4), steps=(1, 1)) "
                       f": f64[S-1,4]  # {HERE}:{lines['op']}")
    assert len(body) == len(g) + 2


def test_every_printed_line_parses():
    g, _ = traced()
    pat = re.compile(r"^  %(\d+) = (\w+)\(([^)]*)\) : (f32|f64|i32|i64|bool)\[[^\]]*\]"
                     r"  # [\w.]+:\d+$")
    ids = [int(pat.match(line).group(1)) for line in str(g).splitlines()[1:-1]]
    assert sorted(ids) == sorted(g.nodes)
    assert ids == g.topo_order()


def test_repr_is_short():
    g, _ = traced()
    assert repr(g) == "<graphc.Graph fn: 1 inputs, 5 nodes>"


def dot_of(g):
    text = g.to_dot()
    node_lines = re.findall(r'^  n(\d+) \[label="((?:[^"\\]|\\.)*)"[^\]]*\];$', text, re.M)
    edge_lines = re.findall(r"^  n(\d+) -> n(\d+);$", text, re.M)
    return text, node_lines, edge_lines


def test_dot_export():
    g, _ = traced()
    text, nodes, edges = dot_of(g)
    assert text.startswith('digraph "fn" {\n') and text.endswith("}\n")
    assert text.count("{") == text.count("}")
    assert sorted(int(i) for i, _ in nodes) == sorted(g.nodes)
    assert Counter((int(a), int(b)) for a, b in edges) == \
        Counter((i, n.id) for n in g.nodes.values() for i in n.inputs)
    labels = dict((int(i), lab) for i, lab in nodes)
    assert labels[0] == r"%0 input x\nf32[S,4]"
    assert labels[4].startswith(r"%4 softmax\nf32[S,4]\ntest_ir_printer.py:")  # the user's line
    # Nothing but header, node, edge and closing lines.
    assert len(text.splitlines()) == 4 + len(nodes) + len(edges) + 1


def test_dot_has_one_edge_per_operand_even_when_repeated():
    g = graphc.trace(lambda x: (x * x) @ x, graphc.spec((3, 3)), name='sq "quoted"')
    text, nodes, edges = dot_of(g)
    assert text.startswith('digraph "sq \\"quoted\\"" {')
    assert len(nodes) == len(g)
    assert Counter(edges) == Counter({("0", "1"): 2, ("1", "2"): 1, ("0", "2"): 1})


def test_dot_renders_with_graphviz_when_installed():
    dot = shutil.which("dot")
    if dot is None:
        import pytest
        pytest.skip("graphviz 'dot' is not installed")
    g, _ = traced()
    out = subprocess.run([dot, "-Tsvg"], input=g.to_dot(), capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "<svg" in out.stdout
