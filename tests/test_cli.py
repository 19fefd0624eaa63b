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
    """The README's main command: the IR, the fused kernels of the numba compile, the
    agreement with float64 and the speed against the reference."""
    ex = subprocess.run([sys.executable, str(ROOT / "examples" / "textbook_transformer.py")],
                        capture_output=True, text=True, timeout=400)
    assert ex.returncode == 0, ex.stderr
    out = ex.stdout
    assert "graph transformer" in out and "TOO LARGE" not in out
    assert "compiled for numba" in out and "generated loop kernels" in out
    assert re.search(r"%\d+\s+attention\s+\S*attention\S*\s+f32\[S,4,16\]", out), out
    assert re.search(r"%\d+\s+kernel\s+add_layernorm", out) and "parallel for" in out
    assert out.count("(ok)") == 2 and len(re.findall(r"numba [\d.]+ ms, reference [\d.]+ ms: "
                                                     r"[\d.]+x faster", out)) == 2


@pytest.mark.slow       # compiles the example's CUDA C for the emulation (~6 CPU s)
def test_gpu_kernels_example_runs():
    """The GPU example prints CUDA C and checks its result (emulated without a GPU)."""
    ex = subprocess.run([sys.executable, str(ROOT / "examples" / "gpu_kernels.py")],
                        capture_output=True, text=True, timeout=300)
    assert ex.returncode == 0, ex.stderr
    assert 'extern "C" __global__' in ex.stdout and "graphc_block_reduce" in ex.stdout
    assert "relative error against the float64 reference" in ex.stdout


@pytest.mark.slow       # compiles the transformer on numba (~13 CPU s)
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


# -- issue 18: drawings, usage errors, compare, profile, memory --------------------------

def _fake_dot(tmp_path, monkeypatch):
    """A 'dot' on PATH that records the DOT text it is given and writes a stub image."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "dot_input.txt"
    script = bin_dir / "dot"
    script.write_text("#!/bin/sh\n"
                      f"cat > {log}\n"
                      'for a in "$@"; do case "$prev" in -o) echo "<svg/>" > "$a";; esac; '
                      'prev="$a"; done\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    return log


def test_show_svg_draws_fused_groups_as_clusters(capsys, tmp_path, monkeypatch):
    log = _fake_dot(tmp_path, monkeypatch)
    f = tmp_path / "g.svg"
    code, out, err = run_cli(capsys, "show", "transformer", "--layers", "1", "--after",
                             "fuse", "--svg", str(f))
    assert code == 0, err
    assert f.read_text().startswith("<svg") and "wrote " + str(f) in out
    dot = log.read_text()
    assert dot.startswith('digraph "transformer"')
    clusters = re.findall(r'subgraph cluster_\d+ \{\n\s+label="%\d+ group ([\w+]+) \((\w+)\)'
                          r'\\nmembers: ([\w, ]+)"', dot)
    assert len(clusters) == dot.count("subgraph cluster_") >= 8
    assert ("reshape+transpose+attention" in {c[0] for c in clusters}
            or any("attention" in c[2] for c in clusters))
    assert "constant layers.0.wk" in dot and "input ids" in dot   # constant / input names


def test_show_dot_after_fuse_has_clusters_and_names(capsys, tmp_path):
    f = tmp_path / "g.dot"
    code, out, _ = run_cli(capsys, "show", "transformer", "--layers", "1", "--after", "fuse",
                           "--dot", str(f))
    text = f.read_text()
    assert code == 0 and text.count("digraph") == 1 and "subgraph cluster_" in text
    assert "group gemm (contraction)" in text and "constant out.weight" in text
    assert "transformer.py:" in text                  # the user's line in a label


def test_show_svg_without_graphviz_names_the_install_step(capsys, tmp_path, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    f = tmp_path / "g.svg"
    code, out, err = run_cli(capsys, "show", "transformer", "--layers", "1", "--svg", str(f))
    assert code == 2 and "apt install graphviz" in err and "--dot FILE" in err
    assert not f.exists()


@pytest.mark.skipif(__import__("shutil").which("dot") is None, reason="no Graphviz dot")
@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("png", b"\x89PNG")])
def test_show_draws_with_real_graphviz(capsys, tmp_path, fmt, magic):
    f = tmp_path / f"g.{fmt}"
    code, out, err = run_cli(capsys, "show", "transformer", "--layers", "1", "--after",
                             "fuse", f"--{fmt}", str(f))
    assert code == 0, err
    data = f.read_bytes()
    assert data.startswith(magic) or (fmt == "svg" and b"<svg" in data[:400])
    if fmt == "svg":
        assert b"group gemm" in data and b"members:" in data


def test_dot_text_is_not_written_into_an_svg_file(capsys, tmp_path):
    f = tmp_path / "g.svg"
    code, _, err = run_cli(capsys, "show", "transformer", "--layers", "1", "--dot", str(f))
    assert code == 2 and "--svg" in err and not f.exists()


@pytest.mark.parametrize("bad", ["x", "128,x", "0", "-5"])
def test_show_memory_needs_sizes(capsys, bad):
    with pytest.raises(SystemExit) as e:
        main(["show", "transformer", "--memory", bad])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--memory" in err and "whole numbers >= 1" in err


def test_compare_checks_every_backend_name_before_running(capsys, monkeypatch):
    import graphc.cli as cli
    ran = []
    monkeypatch.setattr(cli, "compile_for", lambda *a: ran.append(a) or 1 / 0)
    code, out, err = run_cli(capsys, "compare", "transformer", "--layers", "1",
                             "--backends", "numba,foo")
    assert code == 2 and "unknown backend 'foo'" in err and not ran and out == ""


def test_compare_says_no_gpu_before_the_table(monkeypatch):
    import io
    import graphc
    import graphc.cli as cli
    from graphc.backends import cupy_gpu
    monkeypatch.setattr(cupy_gpu, "gpu_available", lambda: (False, "no device (test)"))
    monkeypatch.setattr(cli, "compile_for", lambda g, name: (
        graphc.compile(g, backend="reference"), name))
    both = io.StringIO()
    monkeypatch.setattr(sys, "stdout", both)
    monkeypatch.setattr(sys, "stderr", both)
    code = main(["compare", "transformer", "--layers", "1", "--seq", "8", "--repeat", "1",
                 "--backends", "reference,cupy"])
    text = both.getvalue()
    assert code == 0, text
    warn = text.index("no GPU for cupy")
    table = text.index("backend ")
    assert warn < table and "cupy-emu" in text[table:]
    assert "no GPU" not in text[table:]


def test_deepseek_config_help_lists_the_presets_the_error_lists(capsys):
    from graphc.models.deepseek_v2 import PRESETS
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in PRESETS:
        assert name in help_text
    with pytest.raises(SystemExit) as e:
        main(["run", "deepseek-v2", "--config", "nope"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and all(repr(n) in err for n in PRESETS)


@pytest.mark.slow       # compiles the transformer on numba, as test_run_profile (the
def test_run_profile_percentages_add_up(capsys):   # quick suite: test_profile_percentages)
    code, out, _ = run_cli(capsys, "run", "transformer", "--layers", "1", "--seq", "16",
                           "--backend", "numba", "--repeat", "2", "--profile", "100")
    assert code == 0
    head = out.index("profile of transformer")
    lines = out[head:].splitlines()
    rows = [l for l in lines[2:] if re.match(r"\s+[\d.]+\s+[\d.]+\s+\d+\s", l)]
    outside = float(re.search(r"outside the steps [\d.]+ ms \(([\d.]+)%\)", out).group(1))
    total = sum(float(r.split()[1]) for r in rows) + outside
    assert abs(total - 100) < 0.1 * len(rows) + 0.2, (total, out)


def _needs(graph, S):
    import graphc
    f32 = graphc.compile(graph, backend="reference").memory_need({"S": S})[0]
    f64 = graphc.compile(graph, backend="reference", float64=True).memory_need({"S": S})[0]
    return f32, f64


def test_run_skips_the_float64_check_when_it_would_not_fit(capsys, monkeypatch):
    from graphc.models import transformer
    cfg = transformer.TransformerConfig(vocab_size=1000, d_model=64, n_heads=4, d_ff=256,
                                        n_layers=1)
    f32, f64 = _needs(transformer.random(cfg, seed=0).trace("S"), 96)
    assert f32 < f64
    monkeypatch.setenv("GRAPHC_MEMORY_LIMIT", str((f32 + f64) // 2))
    code, out, err = run_cli(capsys, "run", "transformer", "--layers", "1", "--seq", "96",
                             "--repeat", "1")
    assert code == 0, err
    assert "relative error vs float64 reference: skipped: the float64 reference would " \
           "need about" in out and "S=96" in out
    assert "Traceback" not in err


def test_run_too_large_is_refused_with_a_clean_error(capsys, monkeypatch):
    monkeypatch.setenv("GRAPHC_MEMORY_LIMIT", "64K")
    code, out, err = run_cli(capsys, "run", "transformer", "--layers", "1", "--seq", "96",
                             "--repeat", "1")
    assert code == 2 and "graphc: error: this call needs about" in err
    assert "transformer.py:" in err and "GRAPHC_MEMORY_LIMIT" in err


def test_run_large_call_shows_progress(capsys, monkeypatch):
    import graphc.cli as cli
    monkeypatch.setattr(cli, "PROGRESS_FLOPS", 1.0)
    code, out, err = run_cli(capsys, "run", "transformer", "--layers", "1", "--seq", "8",
                             "--repeat", "2")
    assert code == 0
    assert "graphc: compiling for reference" in err and "first call took" in err
    assert "timed call 2/2" in err and "float64 reference check" in err


def test_estimate_flops_counts_matmuls_and_attention():
    import graphc.cli as cli
    from graphc.models import transformer
    cfg = transformer.TransformerConfig(vocab_size=1000, d_model=64, n_heads=4, d_ff=256,
                                        n_layers=1)
    g = transformer.random(cfg, seed=0).trace("S")
    a, b = cli.estimate_flops(g, {"S": 100}), cli.estimate_flops(g, {"S": 200})
    assert a > 2 * 100 * 64 * 1000 and 2 * a < b < 4.1 * a   # linear + quadratic terms


def test_compare_reports_a_backend_too_large_and_runs_the_others(capsys, monkeypatch):
    """The reference holds the whole score matrices; a size that does not fit it is a
    REFUSED row, not the end of the comparison."""
    import graphc
    import graphc.cli as cli
    from graphc.models import transformer
    cfg = transformer.TransformerConfig(vocab_size=1000, d_model=64, n_heads=4, d_ff=256,
                                        n_layers=1)
    g = transformer.random(cfg, seed=0).trace("S")
    need = graphc.compile(g, backend="reference").memory_need({"S": 96})[0]
    monkeypatch.setenv("GRAPHC_MEMORY_LIMIT", str(need - 1))
    real = cli.compile_for
    # the second "backend": the reference at O0 with a smaller peak (fast, no numba)
    monkeypatch.setattr(cli, "compile_for", lambda graph, name: real(graph, name) if
                        name == "reference" else (graphc.compile(graph, level="O1"), name))
    code, out, err = run_cli(capsys, "compare", "transformer", "--layers", "1", "--seq",
                             "96", "--repeat", "1", "--backends", "reference,numba")
    rows = {l.split()[0]: l for l in out.splitlines() if l.startswith(("reference ",
                                                                       "numba "))}
    assert "REFUSED" in rows["reference"], out
    assert "REFUSED" not in rows["numba"] and re.search(r"numba\s+-\s+[\d.]+", rows["numba"])
    assert "relative error vs float64 reference: skipped" in out      # f64 needs more
    assert "refused reference: this call needs about" in out and code == 1


# -- ONNX files (issue 15): show / run / compare model.onnx ---------------------------------
def _onnx_lm(path, guard_fill=0.0):
    """A tiny ONNX model with input_ids [batch, seq] (reading a 50-row embedding) and an
    int attention_mask [batch, seq]: one attention head in the exported form (bool mask
    through Where, the IsNaN guard after the Softmax), written to ``path``."""
    onnx = pytest.importorskip("onnx", reason="needs the 'compare' extra (onnx)")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    arr = {"E": rng.standard_normal((50, 8)).astype(np.float32),
           "Wq": rng.standard_normal((8, 8)).astype(np.float32) / 3,
           "Wk": rng.standard_normal((8, 8)).astype(np.float32) / 3,
           "Wv": rng.standard_normal((8, 8)).astype(np.float32) / 3,
           "zero": np.zeros((), np.float32), "ninf": np.full((), -np.inf, np.float32),
           "fill": np.full((), guard_fill, np.float32), "ax1": np.array([1], np.int64)}
    mk = helper.make_node
    nodes = [mk("Gather", ["E", "input_ids"], ["x"], name="embed"),
             mk("MatMul", ["x", "Wq"], ["q"], name="q_proj"),
             mk("MatMul", ["x", "Wk"], ["k"], name="k_proj"),
             mk("MatMul", ["x", "Wv"], ["v"], name="v_proj"),
             mk("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="k_t"),
             mk("MatMul", ["q", "kt"], ["s"], name="scores"),
             mk("Cast", ["attention_mask"], ["keep"], to=TensorProto.BOOL, name="mask_bool"),
             mk("Unsqueeze", ["keep", "ax1"], ["keep3"], name="mask_rows"),
             mk("Where", ["keep3", "zero", "ninf"], ["bias"], name="mask_bias"),
             mk("Add", ["s", "bias"], ["sm"], name="masked"),
             mk("Softmax", ["sm"], ["p"], axis=-1, name="softmax"),
             mk("IsNaN", ["p"], ["nan"], name="isnan"),
             mk("Where", ["nan", "fill", "p"], ["pg"], name="nan_guard"),
             mk("MatMul", ["pg", "v"], ["y"], name="context")]
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
           for n in ("input_ids", "attention_mask")]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])]
    g = helper.make_graph(nodes, "lm", ins, out,
                          [numpy_helper.from_array(a, n) for n, a in arr.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return str(path)


def test_onnx_show_explain_says_attention_fused(capsys, tmp_path):
    path = _onnx_lm(tmp_path / "lm.onnx")
    code, out, _ = run_cli(capsys, "show", path, "--explain")
    assert code == 0
    assert "fired: softmax(scale(q @ k^T) [+ mask]) @ v => attention at" in out
    assert "ONNX MatMul node 'context'" in out
    assert "# attention\n1 fused attention op(s); 0 softmax(es) left" in out


def test_onnx_show_explain_says_why_attention_is_not_fused(capsys, tmp_path):
    path = _onnx_lm(tmp_path / "lm.onnx", guard_fill=1.0)
    code, out, _ = run_cli(capsys, "show", path, "--explain")
    assert code == 0
    summary = out.split("# attention\n", 1)[1]
    assert summary.startswith("0 fused attention op(s); 1 softmax(es) left")
    assert "ONNX MatMul node 'context'" in summary and "by 1, not 0" in summary


def test_onnx_show_shape_pins_dims_and_bad_shapes_are_clean_errors(capsys, tmp_path):
    path = _onnx_lm(tmp_path / "lm.onnx")
    code, out, _ = run_cli(capsys, "show", path, "--shape", "input_ids=2,5")
    assert code == 0 and out.startswith("graph lm(%0: i64[2,5], %1: i64[2,5])")
    for bad, says in (("ids=2,5", "'ids' is not an input of the model; its inputs: "
                       "input_ids i64[batch,seq]"),
                      ("input_ids=2", "input_ids has 2 dims"),
                      ("input_ids=2,x", "expected NAME=D,D,...")):
        code, out, err = run_cli(capsys, "show", path, "--shape", bad)
        assert code == 2 and says in err and out == "", (bad, err)


def test_onnx_run_random_inputs_in_range(capsys, tmp_path):
    """Random input_ids index the 50-row table (an id out of range would be an error),
    the mask is 0 / 1; the numba result matches the float64 reference."""
    path = _onnx_lm(tmp_path / "lm.onnx")
    code, out, err = run_cli(capsys, "run", path, "--backend", "numba", "--shape",
                             "input_ids=3,9", "--repeat", "1")
    assert code == 0, err
    assert "batch=3, seq=9, backend=numba" in out
    assert "input  input_ids int64[3, 9], attention_mask int64[3, 9]" in out
    assert "output float32[3, 9, 8]" in out
    rel = float(re.search(r"relative error vs float64 reference: (\S+)", out).group(1))
    assert rel < 1e-5


def test_onnx_compare_has_onnxruntime_as_a_peer(capsys, tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the 'compare' extra (onnxruntime)")
    path = _onnx_lm(tmp_path / "lm.onnx")
    code, out, err = run_cli(capsys, "compare", path, "--backends", "reference",
                             "--shape", "attention_mask=2,6", "--repeat", "2")
    assert code == 0, err
    rows = {l.split()[0]: l.split() for l in out.splitlines()
            if l.split() and l.split()[0] in ("reference", "onnxruntime")}
    assert set(rows) == {"reference", "onnxruntime"}
    for r in rows.values():
        assert float(r[1]) < 1e-5          # vs graphc's float64 reference
    assert "batch=2, seq=6" in out and "vs ORT" in out


def test_onnx_run_inputs_from_npz(capsys, tmp_path, rng):
    import numpy as np
    path = _onnx_lm(tmp_path / "lm.onnx")
    ids = rng.integers(0, 50, (2, 4))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    np.savez(tmp_path / "in.npz", input_ids=ids, attention_mask=mask)
    code, out, err = run_cli(capsys, "run", path, "--inputs", str(tmp_path / "in.npz"),
                             "--repeat", "1")
    assert code == 0, err
    assert "batch=2, seq=4" in out and "(ok" in out
    np.savez(tmp_path / "bad.npz", input_ids=ids)
    code, out, err = run_cli(capsys, "run", path, "--inputs", str(tmp_path / "bad.npz"))
    assert code == 2 and "has no array 'attention_mask' (it has input_ids)" in err
