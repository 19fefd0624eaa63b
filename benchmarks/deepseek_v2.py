"""DeepSeek-V2 "mini" (hidden 1024, 4 layers, 16 heads, MLA with q_lora 384 / kv_lora 256,
32 routed experts top-4 in 4 groups, YaRN; ~196M parameters, fp32) through its peers:

  forward   logits for every position of a --seq token sequence (default 512)
  prefill   what generation does first (time to first token): the --seq token prompt
            -> its cache + the next token's logits. graphc's prefill graph runs the last
            layer's query, attention, FFN and lm_head for the last token only; transformers
            does the same for the head (generate passes logits_to_keep=1)
  decode    greedy tokens per second with the cache (graphc: the compressed MLA cache and
            absorbed weights) after a prompt of --prompt tokens
  batched   with --batch N (N > 1): decode tokens per second (all sequences together) of N
            sequences generated as one batch (graphc: ``generate`` with a list of prompts,
            one batched decode step per token; transformers: ``generate`` on [N, prompt]),
            each after its own --prompt random tokens, and the ratio to one sequence

Peers: graphc backends (--backends, default numba) and, with the `compare` extra,
transformers eager (DeepseekV2ForCausalLM with the same weights, torch on every core).

    python benchmarks/deepseek_v2.py                          # numba and transformers
    python benchmarks/deepseek_v2.py --backends reference,numba --seq 512 --new-tokens 32
    python benchmarks/deepseek_v2.py --batch 8 --no-transformers    # batched decode vs 1

Each peer is timed in its own process (thread pools of one would slow the next). Prints
medians over --repeat runs, the ratio transformers / peer (above 1: faster than
transformers), the relative error of the forward logits against graphc's float64
reference (O0), compile times, the cache bytes per token and the load average (the
machine may be shared: compare runs at low load). Targets from the issue (2 cores):
prefill of 512 tokens < 500 ms and decode >= 80 tokens/s on the numba backend.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from graphc.timing import blas_report, decode_rate, run_timed


CONFIG = "mini"     # --config: a preset of graphc.models.deepseek_v2 ("tiny" for a smoke run)


def build(seed: int = 0):
    from graphc.models import deepseek_v2 as dv
    return dv.random(dv.preset(CONFIG), seed=seed)


def median_s(fn, repeat: int) -> float:
    return run_timed(fn, repeat)[2]


def batch_prompts(vocab: int, batch: int, prompt: int) -> np.ndarray:
    """--batch N: N different random prompts of --prompt tokens each ([N, prompt])."""
    return np.random.default_rng(2).integers(0, vocab, (batch, prompt))


def run_one(peer: str, seq: int, prompt: int, new_tokens: int, repeat: int,
            batch: int = 1) -> dict:
    """Time one peer in this process; return a JSON-able row."""
    if peer == "transformers":
        return run_transformers(seq, prompt, new_tokens, repeat, batch)
    import graphc
    model = build()
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, seq)
    row = {"peer": peer}
    try:
        t0 = time.perf_counter()
        model.compile(peer)                         # forward, prefill, decode: one batch
        row["compile_s"] = time.perf_counter() - t0
        out = model.forward(ids, backend=peer)                   # warm-ups
        model.generate(ids, 1, backend=peer)
        row["forward_ms"] = median_s(lambda: model.forward(ids, backend=peer), repeat) * 1e3
        row["prefill_ms"] = median_s(lambda: model.generate(ids, 1, backend=peer),
                                     repeat) * 1e3
        ref = model.forward(ids, backend="reference", float64=True)
        row["rel_err"] = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
        p = ids[:prompt]
        row["decode_tok_s"] = decode_rate(lambda n: model.generate(p, n, backend=peer),
                                          new_tokens, repeat)
        if batch > 1:
            ps = list(batch_prompts(model.config.vocab_size, batch, prompt))
            # decode_rate: rounds of one generate call; N tokens a step
            row["batch_tok_s"] = batch * decode_rate(
                lambda n: model.generate(ps, n, backend=peer), new_tokens, repeat)
    except graphc.GraphcError as e:
        row["error"] = str(e).splitlines()[0]
    return row


def run_transformers(seq: int, prompt: int, new_tokens: int, repeat: int,
                     batch: int = 1) -> dict:
    """transformers eager with graphc's mini weights (their names are the HF names)."""
    row = {"peer": "transformers"}
    try:
        import torch
        from transformers import DeepseekV2Config, DeepseekV2ForCausalLM
    except ImportError as e:
        return {**row, "error": f"needs the 'compare' extra ({e})"}
    model = build()
    cfg = DeepseekV2Config(**model.config.to_hf())
    cfg._attn_implementation = "eager"
    hf = DeepseekV2ForCausalLM(cfg).eval()
    hf.load_state_dict({k: torch.from_numpy(v) for k, v in model.params.items()}, strict=True)
    ids = torch.from_numpy(np.random.default_rng(1).integers(0, cfg.vocab_size, seq))[None]
    p = ids[:, :prompt]
    with torch.inference_mode():
        out = hf(ids).logits[0].numpy()                          # warm-up
        row["forward_ms"] = median_s(lambda: hf(ids), repeat) * 1e3
        row["prefill_ms"] = median_s(lambda: hf(ids, use_cache=True, logits_to_keep=1),
                                     repeat) * 1e3
        row["decode_tok_s"] = decode_rate(
            lambda n: hf.generate(p, max_new_tokens=n, min_new_tokens=n, do_sample=False),
            new_tokens, repeat)
        if batch > 1:
            pb = torch.from_numpy(batch_prompts(cfg.vocab_size, batch, prompt))
            row["batch_tok_s"] = batch * decode_rate(
                lambda n: hf.generate(pb, attention_mask=torch.ones_like(pb),
                                      max_new_tokens=n, min_new_tokens=n, do_sample=False),
                new_tokens, repeat)
    ref = model.forward(ids[0].numpy(), backend="reference", float64=True)
    row["rel_err"] = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    row["compile_s"] = 0.0
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="numba",
                    help="comma-separated graphc backends (default numba)")
    ap.add_argument("--no-transformers", action="store_true",
                    help="skip the transformers peer")
    ap.add_argument("--seq", type=int, default=512, help="forward/prefill length (512)")
    ap.add_argument("--prompt", type=int, default=16, help="prompt before decode (16)")
    ap.add_argument("--new-tokens", type=int, default=32, help="decoded tokens (32)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="timed runs and decode rounds, medians reported (5)")
    ap.add_argument("--batch", type=int, default=1,
                    help="also decode N sequences as one batch and report tokens/s against "
                         "one sequence (default 1: not measured)")
    ap.add_argument("--config", default="mini",
                    help="model preset (default mini; tiny runs in seconds, for a smoke test)")
    ap.add_argument("--one", help=argparse.SUPPRESS)     # child process: one peer
    a = ap.parse_args(argv)
    global CONFIG
    CONFIG = a.config
    if a.one:
        print(json.dumps(run_one(a.one, a.seq, a.prompt, a.new_tokens, a.repeat, a.batch)))
        return 0
    print(blas_report())
    from graphc.models import deepseek_v2 as dv
    cfg = dv.preset(a.config)
    cb = dv.cache_bytes_per_token(cfg)
    print(f"DeepSeek-V2 {a.config}: {cfg.hidden_size} hidden, {cfg.num_hidden_layers} layers, "
          f"{cfg.n_routed_experts} experts top-{cfg.num_experts_per_tok}; forward and "
          f"prefill S={a.seq}, decode {a.new_tokens} tokens after {a.prompt}")
    print(f"cache per token: MLA {cb['mla']} B vs standard MHA {cb['mha']} B "
          f"({cb['ratio']:.1f}x smaller; MLA's expanded K,V would be {cb['expanded']} B)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} cores)")
    peers = a.backends.split(",") + ([] if a.no_transformers else ["transformers"])
    rows = []
    for b in peers:
        cmd = [sys.executable, __file__, "--one", b, "--seq", str(a.seq), "--prompt",
               str(a.prompt), "--new-tokens", str(a.new_tokens), "--repeat", str(a.repeat),
               "--config", a.config, "--batch", str(a.batch)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        try:
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        except (IndexError, json.JSONDecodeError):
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"peer": b, "crashed": last})
    base = next((r for r in rows if r["peer"] == "transformers" and "forward_ms" in r), None)

    def vs(r, key, higher_better=False):
        if base is None:
            return "-"
        x = r[key] / base[key] if higher_better else base[key] / r[key]
        return f"{x:.2f}x"
    print(f"{'peer':13s} {'forward ms':>10s} {'vs hf':>6s} {'prefill ms':>10s} {'vs hf':>6s} "
          f"{'decode tok/s':>12s} {'vs hf':>6s} {'rel. error':>10s} {'compile s':>9s}")
    for r in rows:
        if "crashed" in r:
            print(f"{r['peer']:13s} FAILED: {r['crashed']}")
            continue
        if "error" in r:
            print(f"{r['peer']:13s} unsupported: {r['error']}")
            continue
        print(f"{r['peer']:13s} {r['forward_ms']:10.1f} {vs(r, 'forward_ms'):>6s} "
              f"{r['prefill_ms']:10.1f} {vs(r, 'prefill_ms'):>6s} {r['decode_tok_s']:12.1f} "
              f"{vs(r, 'decode_tok_s', True):>6s} {r['rel_err']:10.2e} {r['compile_s']:9.2f}")
    print("'vs hf' = how many times faster than transformers eager (above 1: faster); "
          "rel. error: forward logits vs graphc's float64 reference")
    if a.batch > 1:
        print(f"batched decode, {a.batch} sequences of {a.prompt}-token prompts, "
              f"{a.new_tokens} new tokens each (tokens/s of all sequences together):")
        for r in rows:
            if "batch_tok_s" in r:
                print(f"  {r['peer']:13s} batch {a.batch}: {r['batch_tok_s']:8.1f} tok/s   "
                      f"batch 1: {r['decode_tok_s']:8.1f} tok/s   ratio "
                      f"{r['batch_tok_s'] / r['decode_tok_s']:.2f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 1 if any("crashed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
