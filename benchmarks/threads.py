"""Both cores on small work: a small Llama-shaped and a GPT-2-shaped model (hidden 512,
4 layers, 8 heads, S=256, batch 1, fp32, random weights, the last hidden states) on one
thread and on two, graphc (numba) against torch eager with the same weights
(transformers' LlamaModel / GPT2Model, which graphc imports with models.llama.from_hf /
models.gpt2.from_hf). Each (peer, threads) runs in its own process:

  graphc   NUMBA_NUM_THREADS=N (the numba backend's threads: its GEMM split, its split
           kernels, the attention's heads; BLAS runs one thread per call inside)
  torch    torch.set_num_threads(N)

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/threads.py
    python benchmarks/threads.py --families llama --seq 256 --repeat 20

Prints the BLAS report, then per family the median ms of each (peer, threads), the
speed-up of two threads over one (issue 17's target for graphc: >= 1.6x, and faster than
torch eager), graphc's output against torch's (relative norm error) and the load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

FAMILIES = ("llama", "gpt2")
HIDDEN, LAYERS, HEADS = 512, 4, 8


def hf_model(family: str):
    import torch
    import transformers
    torch.manual_seed(0)
    if family == "llama":
        cfg = transformers.LlamaConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                       num_attention_heads=HEADS, num_key_value_heads=4,
                                       intermediate_size=1376, vocab_size=32000,
                                       attn_implementation="sdpa")
        return transformers.LlamaModel(cfg).eval()
    cfg = transformers.GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                                  n_positions=1024, vocab_size=32000,
                                  attn_implementation="sdpa")
    return transformers.GPT2Model(cfg).eval()


def child(peer: str, family: str, S: int, repeat: int, out: str) -> dict:
    import torch
    m = hf_model(family)
    ids = np.random.default_rng(1).integers(0, 32000, (1, S)).astype(np.int64)
    info = {"peer": peer, "family": family, "threads": int(os.environ["BENCH_THREADS"])}
    if peer == "graphc":
        import numba
        from graphc.models import gpt2, llama
        g = (llama if family == "llama" else gpt2).from_hf(m)
        t0 = time.perf_counter()
        exe = g.compile("numba", output="hidden")
        info["compile_s"] = time.perf_counter() - t0
        info["numba_threads"] = numba.get_num_threads()

        def run():
            return exe(ids)
    else:
        torch.set_num_threads(info["threads"])
        t = torch.from_numpy(ids)

        def run():
            with torch.inference_mode():
                return m(input_ids=t).last_hidden_state.numpy()
    y = run()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    np.save(out, np.asarray(y, np.float32))
    info["median_ms"] = float(np.median(times) * 1e3)
    info["min_ms"] = float(np.min(times) * 1e3)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=15, help="timed runs per peer (median)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.seq, args.repeat, args.out)))
        return 0
    from graphc.timing import blas_report
    print(blas_report())
    import tempfile
    work = tempfile.mkdtemp(prefix="graphc-threads-")
    print(f"hidden {HIDDEN}, {LAYERS} layers, {HEADS} heads, S={args.seq}, batch 1, fp32; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; median of {args.repeat} "
          "runs, each (peer, threads) in its own process")
    for family in args.families.split(","):
        rows = {}
        for peer in ("graphc", "torch"):
            for n in (1, 2):
                out = os.path.join(work, f"{family}-{peer}-{n}.npy")
                env = dict(os.environ, BENCH_THREADS=str(n))
                if peer == "graphc":
                    env["NUMBA_NUM_THREADS"] = str(n)
                r = subprocess.run([sys.executable, __file__, "--child", peer, family,
                                    "--seq", str(args.seq), "--repeat", str(args.repeat),
                                    "--out", out], capture_output=True, text=True, env=env)
                if r.returncode:
                    print(f"{family} {peer} x{n}: failed: "
                          f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
                    continue
                rows[(peer, n)] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"\n{family}:")
        for (peer, n), r in rows.items():
            extra = f"  (compile {r['compile_s']:.1f} s)" if "compile_s" in r else ""
            print(f"  {peer:7s} {n} thread{'s' if n > 1 else ' '} {r['median_ms']:8.1f} ms "
                  f"(min {r['min_ms']:.1f}){extra}")
        for peer in ("graphc", "torch"):
            if (peer, 1) in rows and (peer, 2) in rows:
                print(f"  {peer} two threads / one: "
                      f"{rows[(peer, 1)]['median_ms'] / rows[(peer, 2)]['median_ms']:.2f}x "
                      "faster")
        if ("graphc", 2) in rows and ("torch", 2) in rows:
            print(f"  torch / graphc at two threads: "
                  f"{rows[('torch', 2)]['median_ms'] / rows[('graphc', 2)]['median_ms']:.2f}"
                  "x (above 1: graphc is faster)")
            a = np.load(os.path.join(work, f"{family}-graphc-2.npy")).astype(np.float64)
            b = np.load(os.path.join(work, f"{family}-torch-2.npy")).astype(np.float64)
            print(f"  graphc vs torch: relative error {np.linalg.norm(a - b) / np.linalg.norm(b):.1e}")
    print(f"\nload at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
