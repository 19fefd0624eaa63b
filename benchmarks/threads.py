"""Both cores on small work: a small Llama-shaped and a GPT-2-shaped model (hidden 512,
4 layers, 8 heads, S=256, batch 1, fp32, random weights, the last hidden states) on one
thread and on two, graphc (numba) against torch eager with the same weights
(transformers' LlamaModel / GPT2Model, which graphc imports with models.llama.from_hf /
models.gpt2.from_hf). Each (peer, threads) runs in its own process, the four taking turns
(benchmarks/turns.py):

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
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import turns  # noqa: E402  (benchmarks/turns.py: the peers' shared protocol)

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


def worker(peer: str, family: str, out_dir: str) -> None:
    """Runs in its own process (its threads from BENCH_THREADS): build the model once,
    then time calls for the parent (turns.serve; keys: the sequence length); the first
    call of a length saves its output for the parent to compare."""
    import torch
    m = hf_model(family)
    n = int(os.environ["BENCH_THREADS"])
    info = {"peer": peer, "family": family, "threads": n}
    if peer == "graphc":
        import numba
        from graphc.models import gpt2, llama
        g = (llama if family == "llama" else gpt2).from_hf(m)
        t0 = time.perf_counter()
        exe = g.compile("numba", output="hidden")
        info["compile_s"] = time.perf_counter() - t0
        info["numba_threads"] = numba.get_num_threads()

        def call(ids):
            return exe(ids)
    else:
        torch.set_num_threads(n)

        def call(ids):
            with torch.inference_mode():
                return m(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()

    def prepare(key):
        ids = np.random.default_rng(1).integers(0, 32000, (1, int(key))).astype(np.int64)

        def check(out):
            np.save(os.path.join(out_dir, f"{family}-{peer}-{n}-{key}.npy"),
                    np.asarray(out, np.float32))
            return {}
        return (lambda: call(ids)), check
    turns.serve(info, prepare)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=20, help="timed runs per peer (median)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds the runs are spread over, the peers taking turns "
                         "(default 5)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.out)
        return 0
    from graphc.timing import blas_report
    print(blas_report())
    import tempfile
    work = tempfile.mkdtemp(prefix="graphc-threads-")
    key = str(args.seq)
    print(f"hidden {HIDDEN}, {LAYERS} layers, {HEADS} heads, S={args.seq}, batch 1, fp32; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; median of {turns.calls(args.repeat, args.rounds)} "
          f"runs, each (peer, threads) in its own process, taking turns over {args.rounds} "
          "rounds")
    for family in args.families.split(","):
        specs = []
        for peer in ("graphc", "torch"):
            for n in (1, 2):
                env = dict(os.environ, BENCH_THREADS=str(n))
                if peer == "graphc":
                    env["NUMBA_NUM_THREADS"] = str(n)
                specs.append((f"{peer} x{n}", [sys.executable, __file__, "--worker", peer,
                                               family, "--out", work], env))
        peers, errors = turns.start(specs)
        turns.take_turns(peers, [key], args.repeat, args.rounds)
        print(f"\n{family}:")
        for e in errors + [p.error for p in peers if p.error]:
            print(f"  failed: {e}")
        rows = {(p.info["peer"], p.info["threads"]): dict(
            p.info, median_ms=float(np.median(p.times[key])),
            min_ms=float(np.min(p.times[key]))) for p in peers if p.error is None}
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
            a = np.load(os.path.join(work, f"{family}-graphc-2-{key}.npy")).astype(np.float64)
            b = np.load(os.path.join(work, f"{family}-torch-2-{key}.npy")).astype(np.float64)
            print(f"  graphc vs torch: relative error {np.linalg.norm(a - b) / np.linalg.norm(b):.1e}")
    print(f"\nload at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
