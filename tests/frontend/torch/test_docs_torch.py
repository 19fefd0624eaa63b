"""docs/torch.md's examples run as written and give eager torch's numbers."""
import pathlib
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
pytestmark = pytest.mark.compare

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "torch.md"


def test_examples_run_and_match_eager():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2
    torch._dynamo.reset()
    ns: dict = {}
    exec(compile(blocks[0], "docs/torch.md", "exec"), ns)
    with torch.no_grad():
        x = torch.randn(4, 16)
        got, want = ns["fast"](x), ns["model"](x)
    assert float(torch.linalg.norm(got - want) / torch.linalg.norm(want)) < 1e-5
    torch._dynamo.reset()
    ns = {}
    exec(compile(blocks[1], "docs/torch.md", "exec"), ns)
    x = torch.randn(3, 20, 32)
    with torch.no_grad():
        want = ns["model"](x).numpy()
    got = ns["exe"](x.numpy())
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
