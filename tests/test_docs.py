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


def test_readme_python_blocks_run():
    """Every ```python block of the README runs as written (in order, one namespace)."""
    readme = DOCS.parent / "README.md"
    blocks = python_blocks(readme)
    assert len(blocks) >= 2
    ns: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), ns)
    # the attention example against NumPy in float64, with padding this time
    import numpy as np
    rng = np.random.default_rng(1)
    H, KV, D, B, S = ns["H"], ns["KV"], ns["D"], 3, 11
    x = rng.standard_normal((B, S, 64)).astype(np.float32)
    keep = (np.arange(S)[None] < np.array([S, 7, 4])[:, None]).astype(np.int64)
    x64 = x.astype(np.float64)
    q = (x64 @ ns["wq"]).reshape(B, S, H, D).transpose(0, 2, 1, 3)
    k = np.repeat((x64 @ ns["wk"]).reshape(B, S, KV, D).transpose(0, 2, 1, 3), H // KV, 1)
    hidden = (np.arange(S)[None, :] > np.arange(S)[:, None]) | (keep[:, None, None, :] == 0)
    w = np.where(hidden, -np.inf, q @ k.transpose(0, 1, 3, 2) / np.sqrt(D))
    w = np.exp(w - w.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    want = (w @ k).transpose(0, 2, 1, 3).reshape(B, S, H * D)
    got = ns["exe"](x, keep)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
