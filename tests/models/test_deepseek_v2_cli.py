"""graphc run / compare / show deepseek-v2 (tiny shapes, reference backend)."""
import json
import re

import numpy as np

from graphc.cli import main
from graphc.models import deepseek_v2 as dv

from test_deepseek_v2_checkpoint import save


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_random_preset(capsys):
    code, out, _ = run(capsys, "run", "deepseek-v2", "--config", "tiny", "--prompt-ids",
                       "1,2,3", "--max-new-tokens", "5", "--backend", "reference",
                       "--profile", "3")
    assert code == 0, out
    assert "forward on the prompt, profile of deepseek_v2 on reference (S=3)" in out
    assert ("one decode step after the prompt, profile of deepseek_v2_decode_padded on "
            "reference (T=16)") in out
    assert re.search(r"by kind: op [\d.]+ ms", out)
    gen = json.loads(re.search(r"generated (\[.*\])", out).group(1))
    want = dv.random(dv.preset("tiny"), seed=0).generate([1, 2, 3], 5)
    assert gen == want[3:].tolist()
    assert "relative error" in out and "(ok" in out
    assert re.search(r"cache per token: 160 B", out)     # 2 layers x (16 + 4) x 4 bytes


def test_run_checkpoint_and_compare(capsys, tmp_path):
    model = dv.random(dv.preset("tiny", q_lora_rank=None), seed=4)
    d = save(model, tmp_path / "ckpt")
    code, out, _ = run(capsys, "run", "deepseek-v2", "--checkpoint", str(d), "--prompt-ids",
                       "9,8", "--max-new-tokens", "4")
    assert code == 0, out
    gen = json.loads(re.search(r"generated (\[.*\])", out).group(1))
    assert gen == model.generate(np.array([9, 8]), 4)[2:].tolist()
    code, out, _ = run(capsys, "compare", "deepseek-v2", "--checkpoint", str(d),
                       "--backends", "reference,reference", "--max-new-tokens", "3")
    assert code == 0 and out.count("same") == 2, out


def test_bad_checkpoint_is_a_clean_error(capsys, tmp_path):
    code, _, err = run(capsys, "run", "deepseek-v2", "--checkpoint", str(tmp_path))
    assert code == 2 and "graphc: error:" in err and "config.json" in err


def test_show_layer(capsys):
    code, out, _ = run(capsys, "show", "deepseek-v2", "--config", "tiny", "--layer-only")
    assert code == 0 and out.count("rope(") == 2 and out.count("moe(") == 0   # layer 0 dense
