"""The graphc command line and the examples."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from graphc.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_show_prints_the_ir(capsys):
    code, out, _ = run_cli(capsys, "show", "transformer", "--layers", "1")
    assert code == 0
    assert out.startswith("graph transformer(%0: i64[S])")
    assert re.search(r"= softmax\(%\d+, axis=2\) : f32\[4,S,S\]  # transformer\.py:\d+", out)
    assert out.count("layernorm(") == 2


def test_show_dot(capsys, tmp_path):
    f = tmp_path / "g.dot"
    code, out, _ = run_cli(capsys, "show", "transformer", "--layers", "1", "--dot", str(f))
    text = f.read_text()
    assert code == 0 and text.startswith('digraph "transformer"') and "->" in text


def test_show_after_fuse_lists_groups(capsys):
    code, out, _ = run_cli(capsys, "show", "transformer", "--layers", "1", "--after", "fuse")
    assert code == 0 and "// after fuse" in out
    groups = re.findall(r"= fused\(.*kind='(\w+)'\) .*group ([\w+]+)", out)
    kinds = [k for k, _ in groups]
    assert kinds.count("attention") == 1 and kinds.count("contraction") == 7
    assert "graph reshape+transpose+attention" in out   # members printed under the group


def test_show_after_a_pass_not_in_the_pipeline(capsys):
    code, _, err = run_cli(capsys, "show", "transformer", "--level", "O1", "--after", "fuse")
    assert code == 2 and "not in the O1 pipeline" in err


def test_show_explain_time_memory(capsys):
    code, out, _ = run_cli(capsys, "show", "transformer", "--layers", "1", "--explain",
                           "--time", "--memory", "128,1024")
    assert code == 0
    assert "fired: softmax(scale(q @ k^T) [+ mask]) @ v => attention at" in out
    assert "# pass times" in out and "plan_memory" in out
    rows = [l for l in out.splitlines() if l.strip().startswith("S=")]
    assert len(rows) == 2
    for row in rows:
        ratio = float(row.split()[-2])
        assert 1.0 <= ratio <= 1.1     # arena / lower bound


@pytest.mark.parametrize("extra", [[], ["--causal", "--layer-only"]])
def test_run_checks_against_float64(capsys, extra):
    code, out, _ = run_cli(capsys, "run", "transformer", "--seq", "9", "--repeat", "1", *extra)
    assert code == 0
    err = float(re.search(r"relative error vs float64 reference: (\S+)", out).group(1))
    assert err < 1e-5 and "(ok" in out


def test_unknown_backend_is_a_clean_error(capsys):
    code, _, err = run_cli(capsys, "run", "transformer", "--backend", "nope")
    assert code == 2 and "unknown backend 'nope'" in err


def test_ops_and_passes_lists(capsys):
    code, out, _ = run_cli(capsys, "ops")
    assert code == 0 and re.search(r"^softmax\s+reduction", out, re.M)
    code, out, _ = run_cli(capsys, "passes")
    assert code == 0 and "O2: simplify" in out and "=> attention" in out


def test_console_script_and_example_run():
    ex = subprocess.run([sys.executable, str(ROOT / "examples" / "textbook_transformer.py")],
                        capture_output=True, text=True, timeout=120)
    assert ex.returncode == 0, ex.stderr
    assert "graph transformer" in ex.stdout and "TOO LARGE" not in ex.stdout
    assert ex.stdout.count("(ok)") == 2


def test_gpu_kernels_example_runs():
    """The GPU example prints CUDA C and checks its result (emulated without a GPU)."""
    ex = subprocess.run([sys.executable, str(ROOT / "examples" / "gpu_kernels.py")],
                        capture_output=True, text=True, timeout=300)
    assert ex.returncode == 0, ex.stderr
    assert 'extern "C" __global__' in ex.stdout and "graphc_block_reduce" in ex.stdout
    assert "relative error against the float64 reference" in ex.stdout


def test_run_profile(capsys):
    code, out, _ = run_cli(capsys, "run", "transformer", "--layers", "1", "--seq", "16",
                           "--backend", "numba", "--repeat", "2", "--profile", "4")
    assert code == 0
    head = re.search(r"profile of transformer on numba \(S=16\): [\d.]+ ms a call", out)
    assert head, out
    rows = out[head.end():].splitlines()[2:6]
    assert len(rows) == 4 and all(re.match(r"\s+[\d.]+\s+[\d.]+\s+\d+\s+\w+", r)
                                  for r in rows)
    assert "transformer.py:" in out and re.search(r"by kind: .*gemm", out)


@pytest.mark.parametrize("bad", ["0", "-3", "x"])
def test_run_profile_needs_a_positive_count(capsys, bad):
    with pytest.raises(SystemExit) as e:
        main(["run", "transformer", "--profile", bad])
    assert e.value.code == 2 and "expected a whole number >= 1" in capsys.readouterr().err
