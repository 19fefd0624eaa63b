"""GPT-2, BERT and Llama written in graphc's API (graphc.models.gpt2 / bert / llama):
build tiny random models, compile each once on numba for symbolic (batch, sequence), run
two sizes and compare with transformers when it is installed (with graphc's float64
reference otherwise). Also shows the attention steps the O2 pipeline fused.

    python examples/hf_families.py [--backend numba|cupy-emu|reference]
"""
import argparse
import time

import numpy as np

from graphc.lower.program import AttentionStep
from graphc.models import bert, gpt2, llama

try:
    import torch
    import transformers
except ImportError:
    torch = transformers = None

V = 97


def tiny_hf(family):
    """A tiny random transformers model with well-scaled weights (config objects only:
    nothing is downloaded)."""
    if family == "gpt2":
        m = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_layer=2, n_embd=64, n_head=4, vocab_size=V, n_positions=64,
            bos_token_id=0, eos_token_id=0, attn_implementation="eager"))
    elif family == "bert":
        m = transformers.BertModel(transformers.BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, vocab_size=V, max_position_embeddings=64,
            pad_token_id=0, attn_implementation="eager"))
    else:
        m = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, num_hidden_layers=2, vocab_size=V,
            max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            attn_implementation="eager"))
    torch.manual_seed(0)
    fan_in = 0 if family == "gpt2" else -1          # GPT-2's Conv1D weights are [in, out]
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1:
                gain = name.endswith("weight") and ("ln" in name or "norm" in name.lower())
                p.copy_(float(gain) + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[fan_in] ** 0.5)
    return m.eval()


def inputs(family, B, S, rng):
    ids = rng.integers(0, V, (B, S))
    if family != "bert":
        return (ids,), None
    lens = [S] + [int(n) for n in rng.integers(1, S, B - 1)]          # right padding
    mask = (np.arange(S)[None] < np.array(lens)[:, None]).astype(np.int64)
    return (ids, mask), mask.astype(bool)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="numba")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    mods = {"gpt2": gpt2, "bert": bert, "llama": llama}
    for family, mod in mods.items():
        if transformers is not None:
            hf = tiny_hf(family)
            model = mod.from_hf(hf)                  # weights from hf.state_dict()
            peer = "transformers"
        else:
            hf, model, peer = None, mod.random(seed=0), "graphc float64 reference"
        t0 = time.perf_counter()
        exe = model.compile(args.backend)            # one trace over ("B", "S")
        oracle = model.compile("reference", float64=True) if hf is None else None
        steps = getattr(exe, "program", None)       # the reference has no program
        fused = "" if steps is None else (
            f"; {sum(isinstance(s, AttentionStep) for s in steps.steps)} fused attention "
            "steps")
        print(f"{family}: {model.num_params()} parameters, compiled on {args.backend} in "
              f"{time.perf_counter() - t0:.1f} s{fused}")
        for B, S in [(1, 5), (3, 17)]:
            arrays, keep = inputs(family, B, S, rng)
            got = exe(*arrays)
            shape = list(got.shape)
            if hf is not None:
                with torch.no_grad():
                    out = hf(*[torch.from_numpy(a) for a in arrays])
                want = (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()
            else:
                want = oracle(*arrays)
            if keep is not None:                     # BERT: the positions holding tokens
                got, want = got[keep], want[keep]
            err = np.linalg.norm(got - want) / np.linalg.norm(want)
            print(f"  B={B} S={S:2d}: output {shape}, relative error vs "
                  f"{peer} {err:.1e} ({'ok' if err < 1e-4 else 'TOO LARGE'})")
            assert err < 1e-4


if __name__ == "__main__":
    main()
