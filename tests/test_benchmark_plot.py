"""benchmarks/plot.py (the SVG bar charts of docs/benchmarks.md) and the --plot option of
benchmarks/transformer_layer.py: the SVG parses as XML, holds every label, and its bars
are as long as their values say."""
import importlib.util
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NS = "{http://www.w3.org/2000/svg}"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}",
                                                  ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


plot = load("plot")

PANELS = [("S=512", [("gemm-floor", 51.5, 49.0), ("numpy", 132.1, 120.0),
                     ("graphc", 62.9, 55.0), ("a<b & \"c\"", 10.0)]),
          ("S=2048", [("graphc", 326.4, 300.0), ("torch", None, None)])]


def parse(svg: str):
    root = ET.fromstring(svg)
    assert root.tag == NS + "svg"
    texts = ["".join(t.itertext()) for t in root.iter(NS + "text")]
    return root, texts


def test_chart_parses_and_holds_every_label():
    svg = plot.bar_chart("the layer: ms per call", PANELS, unit="ms", note="load 1.5")
    root, texts = parse(svg)
    for label in ["the layer: ms per call", "S=512", "S=2048", "gemm-floor", "numpy",
                  "graphc", 'a<b & "c"', "torch", "failed", "load 1.5", "62.9 ms",
                  "326 ms", "132 ms"]:
        assert label in texts, (label, texts)
    rects = [r for r in root.iter(NS + "rect") if r.find(NS + "title") is not None]
    assert len(rects) == 5                                # the failed peer has no bar
    width = {"".join(r.find(NS + "title").itertext()).split(":")[0] + str(k): float(
        r.get("width")) for k, r in enumerate(rects)}
    # the same panel, the same scale: bars in proportion to their values
    assert width["numpy1"] / width["gemm-floor0"] == pytest.approx(132.1 / 51.5, rel=1e-3)
    assert width["graphc2"] / width["numpy1"] == pytest.approx(62.9 / 132.1, rel=1e-3)
    # graphc's bars stand out
    fills = {r.get("fill") for r in rects if r.find(NS + "title").text.startswith("graphc")}
    assert fills == {plot.HIGHLIGHT}


def test_scale_is_round_and_covers_the_largest_value():
    for v, top in [(51.5, 60), (132.1, 160), (2229.8, 2400), (100, 100), (0.7, 0.8)]:
        assert plot._nice_max(v) == pytest.approx(top)


@pytest.mark.parametrize("panels", [[], [("S=1", [])], [("S=1", [("x", float("nan"))])],
                                    [("S=1", [("x", -1.0)])], [("S=1", [("x", "5")])]])
def test_nothing_or_a_bad_value_to_draw_is_an_error(panels):
    with pytest.raises(ValueError, match="bar_chart"):
        plot.bar_chart("t", panels)


def test_transformer_layer_plot_option(tmp_path, monkeypatch, capsys):
    """--plot draws what the run measured (the peer processes faked: this checks the
    wiring; test_transformer_layer_plot_end_to_end runs them)."""
    bench = load("transformer_layer")
    times = {"numpy": 120.0, "graphc": 60.0}

    class FakePeer:                   # what turns.Peer holds after its turns
        def __init__(self, name):
            self.name, self.info, self.checks = name, {"peer": name, "compile_s": 1.0}, {}
            self.error = "no onnxruntime" if name == "onnxruntime" else None
            self.times = {}

        def close(self):
            pass

    def start(specs):
        return [FakePeer(name) for name, _, _ in specs], []

    def take_turns(peers, keys, repeat, rounds, pause=0.3):
        for p in peers:
            for key in keys:
                if p.error is None:
                    S = int(key)
                    p.times[key] = [times[p.name] * S / 512, times[p.name] * S / 600]
                    p.checks[key] = {"rel_err": 1e-7, "peak_mib": 10}

    monkeypatch.setattr(bench.turns, "start", start)
    monkeypatch.setattr(bench.turns, "take_turns", take_turns)
    out = tmp_path / "chart.svg"
    args = ["--seq", "512,1024", "--peers", "numpy,graphc,onnxruntime", "--plot", str(out)]
    assert bench.main(args) == 0
    assert f"chart: {out}" in capsys.readouterr().out
    _, texts = parse(out.read_text())
    # medians of (t * S / 512, t * S / 600)
    for label in ["S=512", "S=1024", "numpy", "graphc", "onnxruntime", "failed",
                  "111 ms", "55.6 ms", "222 ms"]:
        assert label in texts, (label, texts)
    note = " ".join(texts)                     # the note: the command, the machine's load
    assert "python benchmarks/transformer_layer.py --seq 512,1024" in note, texts
    assert re.search(r"\d+ CPUs, load \d+\.\d", note), texts


def test_transformer_layer_plot_wants_an_svg_name(capsys):
    bench = load("transformer_layer")
    with pytest.raises(SystemExit):
        bench.main(["--plot", "chart.png"])
    assert "ending in .svg" in capsys.readouterr().err


def test_attention_forms_plot_option(tmp_path, monkeypatch, capsys):
    """benchmarks/attention_forms.py --plot: one panel per form, fused against unfused
    (the child processes faked)."""
    import json
    bench = load("attention_forms")
    ms = {("padding", "fused"): 44.0, ("padding", "unfused"): 274.5,
          ("gqa_hf", "fused"): 40.4, ("gqa_hf", "unfused"): 263.5}

    def run(cmd, **kw):
        form, variant = cmd[-2:]
        out = json.dumps({"ms": ms[form, variant], "err": 1e-7,
                          "fused": int(variant == "fused")})
        return subprocess.CompletedProcess(cmd, 0, stdout=out + "\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", run)
    out = tmp_path / "forms.svg"
    assert bench.main(["--forms", "padding,gqa_hf", "--plot", str(out)]) == 0
    assert f"chart: {out}" in capsys.readouterr().out
    root, texts = parse(out.read_text())
    for label in ["padding (6.2x)", "gqa_hf (6.5x)", "fused", "unfused", "44.0 ms",
                  "274 ms", "bars: median ms (shorter is faster)"]:
        assert label in texts, (label, texts)
    fills = [r.get("fill") for r in root.iter(NS + "rect") if r.find(NS + "title") is not None]
    assert fills == [plot.HIGHLIGHT, plot.COLOUR] * 2       # fused stands out


@pytest.mark.slow      # three peer processes (~3 s on 2 cores)
def test_transformer_layer_plot_end_to_end(tmp_path):
    out = tmp_path / "layer.svg"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transformer_layer.py"),
                          "--seq", "16", "--peers", "gemm-floor,numpy", "--repeat", "1",
                          "--plot", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    _, texts = parse(out.read_text())
    assert {"S=16", "gemm-floor", "numpy"} <= set(texts)
    assert sum(bool(re.fullmatch(r"[\d.]+ ms", t)) for t in texts) == 2


def test_benchmarks_md_embeds_charts_the_scripts_made():
    """docs/benchmarks.md shows each docs/benchmarks_*.svg with the command that drew it;
    each parses, was made by plot.py (its note names the command) and has its peers."""
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    charts = sorted((ROOT / "docs").glob("benchmarks_*.svg"))
    assert charts
    for chart in charts:
        assert f"]({chart.name})" in doc, chart.name
        assert f"--plot docs/{chart.name}" in doc, chart.name
        root, texts = parse(chart.read_text())
        assert f"--plot docs/{chart.name}" in " ".join(texts)
        assert any(t.startswith("bars: median ms (shorter is faster)") for t in texts)
        assert any(r.find(NS + "title") is not None for r in root.iter(NS + "rect"))
