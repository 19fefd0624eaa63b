"""graphc show / run / compare on a PyTorch target ``module:callable`` or
``file.py:callable`` (issue 16): imported through graphc.from_torch, eager torch the peer
of compare; a bad target is a one-line error and exit code 2, never a traceback."""
import sys
import textwrap

import pytest

from graphc.cli import main

torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
pytestmark = pytest.mark.compare

MODELS = '''
import torch
from torch.export import Dim


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, ids):
        x = self.emb(ids)
        return self.fc(torch.nn.functional.gelu(self.norm(x))) + x


def make():
    torch.manual_seed(0)
    return Block(), (torch.randint(0, 50, (2, 7)),)


def make_dynamic():
    model, args = make()
    return model, args, ({0: Dim("B", max=8), 1: Dim("S", max=64)},)


def make_sorting():
    class Sorting(torch.nn.Module):
        def forward(self, x):
            return torch.kthvalue(x, 2, dim=-1).values
    return Sorting(), (torch.randn(3, 4),)


def wrong_shape():
    return make()[0]


def not_a_module():
    return "model", (torch.randn(2),)


def broken():
    return 1 / 0


not_callable = 3
'''


@pytest.fixture
def models(tmp_path, monkeypatch):
    path = tmp_path / "tiny_models.py"
    path.write_text(textwrap.dedent(MODELS))
    monkeypatch.chdir(tmp_path)           # module targets resolve from the current dir
    yield path
    sys.modules.pop("tiny_models", None)


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_show_a_file_target_with_dims(capsys, models):
    assert main(["show", f"{models}:make_dynamic"]) == 0
    out = capsys.readouterr().out
    assert "i64[B,S]" in out and "layernorm" in out, out


def test_compare_module_target_against_eager_torch(capsys, models):
    assert main(["compare", "tiny_models:make", "--backends", "reference",
                 "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    rows = {l.split()[0]: l.split() for l in out.splitlines()
            if l.split() and l.split()[0] in ("reference", "torch")}
    assert set(rows) == {"reference", "torch"}, out
    # both agree with graphc's float64 reference (float32 rounding only)
    assert float(rows["reference"][1]) < 1e-5 and float(rows["torch"][1]) < 1e-5, out
    assert "vs torch" in out and "tiny_models:make: static" in out, out


@pytest.mark.slow
def test_compare_numba_and_run_at_a_new_shape(capsys, models):
    assert main(["compare", f"{models}:make_dynamic", "--backends", "reference,numba,torch",
                 "--shape", "ids=3,11", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "B=3, S=11" in out and "numba" in out and "FAILED" not in out, out
    assert main(["run", "tiny_models:make", "--backend", "numba", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "relative error vs float64 reference" in out and "(ok" in out, out


def test_show_pins_shape(capsys, models):
    assert main(["show", "tiny_models:make_dynamic", "--shape", "ids=3,5"]) == 0
    out = capsys.readouterr().out
    assert "i64[3,5]" in out and "[B," not in out, out


@pytest.mark.parametrize("target, says", [
    ("tiny_models:nope", "tiny_models has no attribute 'nope'"),
    ("no_such_module_xyz:make", "no module named 'no_such_module_xyz'"),
    ("tiny_models:wrong_shape", "must return (model, example_args)"),
    ("tiny_models:not_a_module", "not a torch.nn.Module"),
    ("tiny_models:not_callable", "not a callable"),
    ("tiny_models:broken", "calling broken() failed: ZeroDivisionError"),
    ("missing_dir/m.py:make", "no such file"),
])
def test_bad_targets_are_clear_errors(capsys, models, target, says):
    err = _error(capsys, ["show", target])
    assert says in err and target in err, err


def test_broken_target_names_the_users_line(capsys, models):
    err = _error(capsys, ["show", "tiny_models:broken"])
    assert "tiny_models.py:" in err and "return 1 / 0" in err, err


def test_no_colon_and_bare_py_file(capsys, models):
    for argv, says in ((["show", "tiny_models"], "PyTorch target MODULE:CALLABLE"),
                       (["compare", str(models)], f"name the callable in it, {models}:CALLABLE")):
        with pytest.raises(SystemExit) as e:          # argparse's usage error
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and "Traceback" not in err, err


def test_unsupported_op_lists_the_users_line(capsys, models):
    err = _error(capsys, ["show", "tiny_models:make_sorting"])
    assert "aten.kthvalue" in err and "tiny_models.py" in err, err


def test_torch_not_installed(capsys, models, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    err = _error(capsys, ["show", "tiny_models:make"])
    assert "needs torch, which is not installed" in err, err


def test_wrong_peer_is_a_usage_error(capsys, models):
    err = _error(capsys, ["compare", "tiny_models:make", "--backends", "reference,onnxruntime"])
    assert "onnxruntime is not the peer of tiny_models:make (its peer: torch)" in err, err
