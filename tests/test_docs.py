"""The code in the docs runs as written: docs/adding_an_op.md's example op, registered
the documented way, runs on every backend (its own assertions compare them)."""
import pathlib
import re

import graphc
from graphc.ops import unregister_op

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_adding_an_op_example_runs_on_every_backend():
    blocks = python_blocks(DOCS / "adding_an_op.md")
    assert len(blocks) >= 2
    ns: dict = {}
    try:
        for block in blocks:
            # an indented snippet inside a list item is dedented like the text around it
            exec(compile(re.sub(r"(?m)^    ", "", block) if block.startswith("    ")
                         else block, "docs/adding_an_op.md", "exec"), ns)
        assert "squareplus" in graphc.all_ops()
        assert graphc.get_op("squareplus").lower is not None
    finally:
        unregister_op("squareplus")
