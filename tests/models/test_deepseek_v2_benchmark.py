"""benchmarks/deepseek_v2.py end to end on the tiny preset (the mini runs are for the
benchmark docs): every peer reports forward, prefill and decode numbers and a small error;
with the `compare` extra transformers runs beside graphc and the ratios are printed."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "deepseek_v2.py"
ARGS = ["--config", "tiny", "--seq", "24", "--prompt", "5", "--new-tokens", "3",
        "--repeat", "1"]
ROW = re.compile(r"^(\S+)\s+([\d.]+)\s+(\S+)\s+([\d.]+)\s+(\S+)\s+([\d.]+)\s+(\S+)\s+"
                 r"([\d.e+-]+)\s+([\d.]+)$")


def rows(out: str) -> dict:
    return {m[1]: m.groups() for line in out.splitlines() if (m := ROW.match(line))}


def run(*extra):
    res = subprocess.run([sys.executable, str(SCRIPT), *ARGS, *extra], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.slow       # a subprocess compiling DeepSeek-V2 tiny on numba (~75 CPU s)
def test_graphc_peers_report_every_metric():
    out = run("--backends", "reference,numba", "--no-transformers")
    got = rows(out)
    assert set(got) == {"reference", "numba"}, out
    for peer, (_, fwd, vs1, pre, vs2, dec, vs3, err, _) in got.items():
        assert float(fwd) > 0 and float(pre) > 0 and float(dec) > 0
        assert vs1 == vs2 == vs3 == "-"            # no transformers row to compare with
        assert float(err) < 1e-4, (peer, err)
    assert "cache per token: MLA" in out


@pytest.mark.slow
@pytest.mark.compare
@pytest.mark.skipif(importlib.util.find_spec("transformers") is None
                    or importlib.util.find_spec("torch") is None,
                    reason="needs the 'compare' extra (torch, transformers)")
def test_transformers_peer_and_ratios():
    out = run("--backends", "numba")
    got = rows(out)
    assert set(got) == {"numba", "transformers"}, out
    assert got["transformers"][2] == "1.00x"
    assert re.fullmatch(r"\d+\.\d\dx", got["numba"][2])
    assert float(got["transformers"][7]) < 1e-4      # same weights, same logits
