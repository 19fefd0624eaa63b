"""The same ONNX file run by graphc (numba), ONNX Runtime and OpenVINO (CPU, f32
precision hint; where installed: the `bench` extra), each peer in its own process (OpenMP
and BLAS thread pools spin after work and would slow whoever runs next), the peers
taking turns over several rounds with a pause between turns (a slow spell of a shared
machine falls on all of them alike). Models, random
weights, fp32, exported with torch.onnx.export(dynamo=True) with dynamic batch and
sequence:

  layer   the textbook encoder layer of benchmarks/transformer_layer.py (its exporter)
  gpt2    GPT-2-small-shaped: 2 layers, hidden 768, 12 heads, vocab 8192
  llama   Llama-shaped: 2 layers, hidden 768, 12 heads, 4 KV heads (GQA), ffn 2048, rope,
          vocab 8192

at batch 1 x S=512 and batch 4 x S=128, from one import and one compile per model (each
peer compiles the dynamic model once).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/onnx_models.py
    python benchmarks/onnx_models.py --models gpt2 --sizes 1x512 --repeat 5

Prints the BLAS library and kernel first (graphc.timing.blas_report, loud when an
environment variable forces the kernel), then median ms per peer, the ratios ORT / graphc
and OV / graphc (above 1: graphc is faster), graphc's output against each peer's (relative
norm error) and graphc's cold import + compile (an empty kernel cache).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from graphc.timing import blas_report

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import turns  # noqa: E402  (benchmarks/turns.py: the peers' shared protocol)

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("layer", "gpt2", "llama")
SIZES = ((1, 512), (4, 128))
VOCAB = 8192
PEERS = ("graphc", "onnxruntime", "openvino")
NAMES = {"graphc": "graphc", "graphc-blas": "blas", "onnxruntime": "ORT", "openvino": "OV"}


def export(model: str, path: str) -> None:
    """Write ``model`` as ONNX to ``path`` (random weights, seed 0)."""
    if model == "layer":
        sys.path.insert(0, HERE)
        import transformer_layer
        transformer_layer.export_onnx(path)
        return
    import torch
    torch.manual_seed(0)
    if model == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel
        m = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=1024, n_embd=768,
                                       n_layer=2, n_head=12))
    else:
        from transformers import LlamaConfig, LlamaForCausalLM
        m = LlamaForCausalLM(LlamaConfig(
            vocab_size=VOCAB, hidden_size=768, num_attention_heads=12, num_key_value_heads=4,
            intermediate_size=2048, num_hidden_layers=2, max_position_embeddings=1024))
    m.eval()

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids):
            return self.m(input_ids=ids, use_cache=False).logits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(m), (torch.randint(0, VOCAB, (2, 16)),), path,
                          input_names=["input_ids"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                        "logits": {0: "batch", 1: "seq"}},
                          dynamo=True, opset_version=18, verbose=False)


def inputs(model: str, B: int, S: int) -> list:
    rng = np.random.default_rng(1000 * B + S)
    if model == "layer":
        return [rng.standard_normal((B, S, 768)).astype(np.float32)]
    return [rng.integers(0, VOCAB, (B, S)).astype(np.int64)]


def worker(peer: str, model: str, path: str, out_dir: str) -> None:
    """Runs in its own process: load the file once (the load times), then time calls
    for the parent (turns.serve; keys ``BxS``); the first call of a size saves its output
    for the parent to compare."""
    info: dict = {"peer": peer, "model": model}
    t0 = time.perf_counter()
    if peer in ("graphc", "graphc-blas"):
        if peer == "graphc-blas":        # every GEMM through NumPy's BLAS, not oneDNN
            os.environ["GRAPHC_GEMM"] = "blas"
        import graphc
        g = graphc.from_onnx(path)
        info["import_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        exe = graphc.compile(g, backend="numba", progress=False)
        info["compile_s"] = time.perf_counter() - t1
        info["session_s"] = info["import_s"] + info["compile_s"]

        def call(xs):
            return exe(*xs)
    elif peer == "openvino":
        import openvino as ov
        # the dynamic model compiled once, like graphc's one compile for every size
        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        info["session_s"] = time.perf_counter() - t0
        request = compiled.create_infer_request()

        def call(xs):
            return request.infer(xs)[0]
    else:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        info["session_s"] = time.perf_counter() - t0
        names = [i.name for i in sess.get_inputs()]

        def call(xs):
            return sess.run(None, dict(zip(names, xs)))[0]

    def prepare(key):
        B, S = _sizes(key)[0]
        xs = inputs(model, B, S)

        def check(out):
            np.save(os.path.join(out_dir, f"{peer}-{model}-{key}.npy"), np.asarray(out))
            return {}
        return (lambda: call(xs)), check
    turns.serve(info, prepare)


def measure(peers, model, path, sizes, repeat, rounds, out_dir, env):
    """Every peer loaded (one after another: each compile timed alone), then the peers
    take turns (turns.take_turns) over ``rounds`` rounds. Returns the Peers and the
    errors."""
    ok, errors = turns.start(
        [(p, [sys.executable, __file__, "--worker", p, "--models", model, "--file", path,
              "--out", out_dir], env) for p in peers])
    turns.take_turns(ok, [f"{B}x{S}" for B, S in sizes], repeat, rounds)
    errors += [p.error for p in ok if p.error]
    return [p for p in ok if p.error is None], errors


def _sizes(text: str):
    out = []
    for part in text.split(","):
        b, _, s = part.partition("x")
        out.append((int(b), int(s)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sizes", default=",".join(f"{b}x{s}" for b, s in SIZES),
                    help="BxS[,BxS] (default 1x512,4x128)")
    ap.add_argument("--repeat", type=int, default=20,
                    help="timed runs per size and peer (median; default 20)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds the runs are spread over, the peers taking turns "
                         "(default 5)")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help="graphc and its peers (default graphc,onnxruntime,openvino; "
                         "openvino where installed; graphc-blas: graphc with every GEMM "
                         "through NumPy's BLAS, GRAPHC_GEMM=blas)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = _sizes(args.sizes)
    if args.worker:
        worker(args.worker, args.models, args.file, args.out)
        return 0
    print(blas_report())
    peers = args.peers.split(",")
    if "graphc" not in peers:
        ap.error("--peers must include graphc (the others are compared with it)")
    if args.peers == ",".join(PEERS) and importlib.util.find_spec("openvino") is None:
        peers.remove("openvino")
        print("openvino is not installed (pip install -e '.[bench]'): ONNX Runtime only")
    print(f"graphc (numba) vs {', '.join(p for p in peers if p != 'graphc')} on the same "
          f"ONNX file, fp32, random weights; "
          f"{os.cpu_count()} CPUs; median of {turns.calls(args.repeat, args.rounds)} runs per size after a warm-up, "
          f"each peer in its own process, the peers taking turns over {args.rounds} rounds")
    work = tempfile.mkdtemp(prefix="graphc-onnx-bench-")
    env = dict(os.environ)
    env["GRAPHC_CACHE_DIR"] = os.path.join(work, "cache")      # cold: an empty cache
    for model in args.models.split(","):
        path = os.path.join(work, f"{model}.onnx")
        t0 = time.perf_counter()
        sub = subprocess.run([sys.executable, "-c",
                              f"import sys; sys.path.insert(0, {HERE!r}); "
                              f"import onnx_models; onnx_models.export({model!r}, {path!r})"],
                             capture_output=True, text=True)
        if sub.returncode != 0:
            print(f"\n{model}: export failed: {sub.stderr.strip().splitlines()[-1:]}")
            continue
        t_export = time.perf_counter() - t0
        mb = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work)
                 if f.startswith(f"{model}.onnx")) / 2**20      # with external data
        done, errors = measure(peers, model, path, sizes, args.repeat, args.rounds, work, env)
        print(f"\n{model}: {mb:.0f} MiB of ONNX (export {t_export:.0f} s)")
        for e in errors:
            print(f"  {e}")
        ok = [dict(p.info, runs={k: {"median_ms": float(np.median(v))}
                                 for k, v in p.times.items()}) for p in done]
        g = next((r for r in ok if r["peer"] == "graphc"), None)
        if g is None or len(ok) < 2:
            continue
        print(f"  graphc cold import {g['import_s']:.2f} s + compile {g['compile_s']:.2f} s "
              f"= {g['import_s'] + g['compile_s']:.2f} s (empty kernel cache); "
              + ", ".join(f"{NAMES[r['peer']]} session {r['session_s']:.2f} s"
                          for r in ok if r is not g))
        others = [r for r in ok if r is not g]
        print(f"  {'B x S':>8s} {'graphc ms':>10s} "
              + " ".join(f"{NAMES[r['peer']] + ' ms':>8s} {NAMES[r['peer']] + '/graphc':>10s} "
                         f"{'rel. err':>9s}" for r in others))
        for B, S in sizes:
            key = f"{B}x{S}"
            a = np.load(os.path.join(work, f"graphc-{model}-{key}.npy")).astype(np.float64)
            gm = g["runs"][key]["median_ms"]
            line = f"  {key:>8s} {gm:10.1f} "
            for r in others:
                b = np.load(os.path.join(work, f"{r['peer']}-{model}-{key}.npy")
                            ).astype(np.float64)
                err = np.linalg.norm(a - b) / np.linalg.norm(b)
                om = r["runs"][key]["median_ms"]
                line += f"{om:8.1f} {om / gm:9.2f}x {err:9.1e} "
            print(line.rstrip())
    print("\nORT/graphc = ONNX Runtime time / graphc time, OV/graphc the same for OpenVINO "
          "(above 1: graphc is faster); rel. err: graphc's output against that peer's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
