"""docs/torch.md's examples run as written and give eager torch's numbers."""
import pathlib
import re
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
pytestmark = pytest.mark.compare

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "torch.md"


@pytest.mark.slow   # two numba compiles (quick suite: the error examples below)
def test_examples_run_and_match_eager():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 3
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


def _cli_example(tmp_path, monkeypatch):
    text = DOC.read_text()
    module = re.findall(r"```python\n(.*?)```", text, flags=re.S)[2]
    commands = re.findall(r"```sh\n(.*?)```", text, flags=re.S)[0].strip().splitlines()
    errors = re.findall(r"```\n(graphc: error: .*?)```", text, flags=re.S)[0]
    (tmp_path / "mymodels.py").write_text(module)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    return commands, errors.strip().splitlines()


def test_cli_error_examples_are_what_graphc_says(tmp_path, monkeypatch, capsys):
    from graphc.cli import main
    _, errors = _cli_example(tmp_path, monkeypatch)
    checked = 0
    for line in errors:
        target = line.split(": ")[2]
        if target in ("mymodels:nope", "nosuch:make"):
            assert main(["show", target]) == 2
            assert capsys.readouterr().err.strip() == line
            checked += 1
    assert checked == 2


@pytest.mark.slow
def test_cli_examples_run(tmp_path, monkeypatch, capsys):
    import shlex

    from graphc.cli import main
    commands, _ = _cli_example(tmp_path, monkeypatch)
    assert len(commands) == 3
    for cmd in commands:
        argv = shlex.split(cmd)
        assert argv[0] == "graphc"
        assert main(argv[1:]) == 0, cmd
        out = capsys.readouterr().out
        if argv[1] == "compare":
            rows = {l.split()[0]: l.split() for l in out.splitlines() if l.split()}
            assert {"reference", "numba", "torch"} <= set(rows), out
            assert "B=4, S=128" in out and "FAILED" not in out, out


def test_supported_ops_table_is_the_translation_table():
    from graphc.frontend.torch import supported_ops
    from graphc.frontend.torch.table import load_families
    text = DOC.read_text()
    section = text[text.index("### Supported ATen ops"):text.index("Not supported:")]
    rows = re.findall(r"^\| (\w+) \| (.+) \|$", section, flags=re.M)
    doc = {(fam, op.strip()) for fam, ops in rows if fam not in ("family",)
           for op in ops.split(",")}
    table = {(fn.__module__.rsplit(".", 1)[-1], op.replace("aten.", "").rsplit(".", 1)[0])
             for op, fn in load_families().items()}
    assert doc == table, (doc - table, table - doc)
    assert len(supported_ops()) == len(load_families())
