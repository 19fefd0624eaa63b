"""The textbook encoder layer (post-LN, ReLU, 12 heads, d=768, ffn=3072, fp32, batch 1)
through its peers, each in its own process (OpenMP and BLAS thread pools spin after work
and would slow whoever runs next), kept up for the whole run, the peers taking turns over
several rounds (benchmarks/turns.py: a slow spell of a shared machine falls on all alike):

  gemm-floor  the layer's GEMMs alone in NumPy (what BLAS alone costs)
  numpy       the layer hand-written in NumPy (eager)
  graphc      graphc's numba backend
  graphc-blas the same with every GEMM through NumPy's BLAS (GRAPHC_GEMM=blas; not in
              the default list: name it to compare the GEMMs)
  torch       PyTorch eager, nn.TransformerEncoderLayer with the same weights
  onnxruntime the same torch layer exported with torch.onnx.export(dynamo=True)
  openvino    OpenVINO on that ONNX file (CPU, INFERENCE_PRECISION_HINT=f32, reshaped to
              the static [1, S, 768] it runs: its best case), where openvino is installed

and, when CuPy sees a GPU (or when named in --peers):

  graphc-cupy graphc's cupy backend (inputs and outputs stay on the GPU; synchronised)
  torch-cuda  PyTorch eager on the same GPU (needs a CUDA build of torch)

    python benchmarks/transformer_layer.py                  # S=512 and 2048, all peers
    python benchmarks/transformer_layer.py --seq 512 --peers graphc,numpy --repeat 20
    python benchmarks/transformer_layer.py --plot docs/benchmarks_layer.svg   # and a chart

Prints median ms per peer, ratios against graphc, relative error against a float64 NumPy
run of the same layer, peak memory (RSS growth over the weights) and graphc's cold and
warm compile times (cold: an empty kernel cache; warm: a second process). With --plot
FILE.svg it also draws the medians (and minima) as a bar chart, one panel per S
(benchmarks/plot.py: plain SVG, no plotting package).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import turns  # noqa: E402  (benchmarks/turns.py: the peers' shared protocol)

D, H, FF = 768, 12, 3072
PEERS = ("gemm-floor", "numpy", "graphc", "torch", "onnxruntime", "openvino")
GPU_PEERS = ("graphc-cupy", "torch-cuda")


def gpu_present() -> bool:
    try:
        from graphc.backends.cupy_gpu import gpu_available
    except ImportError:
        return False
    return gpu_available()[0]


def params():
    from graphc.models import transformer
    cfg = transformer.TransformerConfig(d_model=D, n_heads=H, d_ff=FF, n_layers=1,
                                        vocab_size=16, positional=False)
    return cfg, transformer.init_params(cfg, seed=0)


def numpy_layer(P, x, dtype=np.float32):
    P = {k: v.astype(dtype) for k, v in P.items()}
    p = "layers.0."
    S = x.shape[0]
    q, k, v = ((x @ P[p + "w" + c] + P[p + "b" + c]).reshape(S, H, D // H).transpose(1, 0, 2)
               for c in "qkv")
    s = q @ k.transpose(0, 2, 1) / np.sqrt(D // H)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    o = (s @ v).transpose(1, 0, 2).reshape(S, D) @ P[p + "wo"] + P[p + "bo"]

    def ln(y, w, b):
        mu = y.mean(-1, keepdims=True)
        var = ((y - mu) ** 2).mean(-1, keepdims=True)
        return (y - mu) / np.sqrt(var + 1e-5) * w + b
    x = ln(x + o, P[p + "ln1.weight"], P[p + "ln1.bias"])
    f = np.maximum(x @ P[p + "w1"] + P[p + "b1"], 0) @ P[p + "w2"] + P[p + "b2"]
    return ln(x + f, P[p + "ln2.weight"], P[p + "ln2.bias"])


def gemm_floor(P, x):
    p = "layers.0."
    S = x.shape[0]
    for c in "qkv":
        x @ P[p + "w" + c]
    q = np.ones((H, S, D // H), np.float32)
    s = q @ q.transpose(0, 2, 1)
    s @ q
    x @ P[p + "wo"]
    h = x @ P[p + "w1"]
    return h @ P[p + "w2"]


def torch_module(P):
    from graphc.models import transformer
    return transformer.torch_encoder_layer(params()[0], P)


def export_onnx(path=None):
    """The layer as torch.onnx.export(dynamo=True) writes it (input x [B, S, 768], B and S
    dynamic): the onnx.ModelProto, also saved to ``path`` when given
    (benchmarks/onnx_models.py runs this file)."""
    import torch
    m = torch_module(params()[1])
    x = torch.zeros(2, 64, D)          # not 1: torch.export specialises a dim of size 1
    prog = torch.onnx.export(m, (x,), dynamo=True, verbose=False, input_names=["x"],
                             dynamic_shapes=({0: torch.export.Dim("B"),
                                              1: torch.export.Dim("S")},))
    if path is not None:
        prog.save(str(path))
    return prog.model_proto


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(peer: str) -> None:
    """Runs in its own process: set up the peer once (graphc compiles one executable for
    every S), then time calls for the parent (turns.serve; keys: S). The first call of
    an S is checked against a float64 NumPy run of the layer, with the peak memory so
    far."""
    cfg, P = params()
    info: dict = {"peer": peer}
    base_rss = rss_mib()
    if peer == "gemm-floor":
        def call(x):
            return gemm_floor(P, x)
    elif peer == "numpy":
        def call(x):
            return numpy_layer(P, x)
    elif peer in ("graphc", "graphc-blas"):
        if peer == "graphc-blas":      # every GEMM through NumPy's BLAS (not oneDNN)
            os.environ["GRAPHC_GEMM"] = "blas"
        import graphc
        from graphc.models import transformer
        g = transformer.Transformer(cfg, P).trace_layer(0)
        t0 = time.perf_counter()
        exe = graphc.compile(g, backend="numba", progress=False)
        info["compile_s"] = time.perf_counter() - t0

        def call(x):
            return exe(x)
    elif peer == "torch":
        import torch
        m = torch_module(P)

        def call(x):
            with torch.inference_mode():
                return m(torch.from_numpy(x)[None])[0].numpy()
    elif peer == "onnxruntime":
        import onnxruntime as ort
        t0 = time.perf_counter()
        sess = ort.InferenceSession(export_onnx().SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        info["compile_s"] = time.perf_counter() - t0
        name = sess.get_inputs()[0].name

        def call(x):
            return sess.run(None, {name: x[None]})[0][0]
    elif peer == "openvino":
        import openvino as ov
        core = ov.Core()
        tmp = tempfile.mkdtemp(prefix="graphc-bench-ov-")
        path = os.path.join(tmp, "layer.onnx")
        export_onnx(path)
        compiled: dict = {}

        def call(x):
            S = x.shape[0]
            if S not in compiled:   # reshaped to the static [1, S, 768]: its best case
                t0 = time.perf_counter()
                model = core.read_model(path)
                model.reshape({model.inputs[0].get_any_name(): [1, S, D]})
                compiled[S] = core.compile_model(
                    model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
                info.setdefault("compile_s", time.perf_counter() - t0)
            return compiled[S].infer([x[None]])[0][0]
    elif peer == "graphc-cupy":
        import cupy
        import graphc
        from graphc.models import transformer
        g = transformer.Transformer(cfg, P).trace_layer(0)
        t0 = time.perf_counter()
        exe = graphc.compile(g, backend="cupy", device_outputs=True)
        info["compile_s"] = time.perf_counter() - t0

        def call(x):
            y = exe(x)
            cupy.cuda.Device().synchronize()
            return y
    elif peer == "torch-cuda":
        import torch
        if not torch.cuda.is_available():
            raise SystemExit("torch has no CUDA device (a CPU build of torch?)")
        m = torch_module(P).cuda()

        def call(x):
            with torch.inference_mode():
                y = m(x)
            torch.cuda.synchronize()
            return y
    else:
        raise SystemExit(f"unknown peer {peer}")

    def prepare(key):
        S = int(key)
        x = np.random.default_rng(1).standard_normal((S, D)).astype(np.float32)
        xin = x
        if peer == "graphc-cupy":
            import cupy
            xin = cupy.asarray(x)
        elif peer == "torch-cuda":
            import torch
            xin = torch.from_numpy(x)[None].cuda()

        def check(out):
            got = {"peak_mib": float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                     / 1024 - base_rss)}
            if hasattr(out, "get"):
                out = out.get()                      # CuPy
            elif hasattr(out, "cpu"):
                out = out[0].cpu().numpy()           # torch CUDA
            if peer != "gemm-floor":
                ref = numpy_layer(P, x.astype(np.float64), np.float64)
                got["rel_err"] = float(np.linalg.norm(np.asarray(out, np.float64) - ref)
                                       / np.linalg.norm(ref))
            return got
        return (lambda: call(xin)), check
    turns.serve(info, prepare)


def command(peer: str) -> list:
    return [sys.executable, __file__, "--worker", peer]


def compile_time(env) -> float:
    """graphc's compile of the layer in a process of its own (``env``: its cache)."""
    peers, errors = turns.start([("graphc", command("graphc"), env)])
    for p in peers:
        p.close()
    return peers[0].info["compile_s"] if peers else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", default="512,2048", help="sequence lengths (default 512,2048)")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--repeat", type=int, default=10, help="timed runs per peer (median)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds the runs are spread over, the peers taking turns "
                         "(default 5)")
    ap.add_argument("--plot", metavar="FILE.svg",
                    help="also draw the medians as an SVG bar chart into FILE.svg")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.plot and not args.plot.endswith(".svg"):
        ap.error(f"--plot writes SVG: give a file name ending in .svg, got {args.plot!r}")
    if args.worker:
        worker(args.worker)
        return 0
    peers = args.peers.split(",")
    from graphc.timing import blas_report
    print(blas_report())
    if args.peers == ",".join(PEERS) and importlib.util.find_spec("openvino") is None:
        peers.remove("openvino")
        print("openvino is not installed (pip install -e '.[bench]'): no OpenVINO peer")
    if args.peers == ",".join(PEERS) and gpu_present():
        peers += list(GPU_PEERS)
    print(f"textbook encoder layer: d={D}, heads={H}, ffn={FF}, fp32, batch 1; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; median of {turns.calls(args.repeat, args.rounds)} "
          f"runs, each peer in its own process, the peers taking turns over {args.rounds} "
          "rounds")
    env = dict(os.environ)
    if "graphc" in peers:
        # Cold and warm compile: a fresh cache directory, then a second process.
        env["GRAPHC_CACHE_DIR"] = tempfile.mkdtemp(prefix="graphc-bench-cache-")
        cold, warm = compile_time(env), compile_time(env)
        print(f"graphc compile of the layer: cold {cold:.2f} s (empty cache), warm "
              f"{warm:.2f} s (second process)")
    seqs = [s for s in args.seq.split(",")]
    running, errors = turns.start([(p, command(p), env) for p in peers])
    turns.take_turns(running, seqs, args.repeat, args.rounds)
    for e in errors:
        print(f"failed: {e}")
    panels = []
    for key in seqs:
        rows = []
        for p in running:
            if p.error is not None:
                rows.append({"peer": p.name, "error": p.error})
            elif key in p.times:
                rows.append(dict(p.checks.get(key, {}), peer=p.name,
                                 median_ms=float(np.median(p.times[key])),
                                 min_ms=float(np.min(p.times[key]))))
        panels.append((f"S={key}", [(r["peer"], r.get("median_ms"), r.get("min_ms"))
                                    for r in rows]))
        g = next((r for r in rows if r["peer"] == "graphc" and "median_ms" in r), None)
        gpu = next((r for r in rows if r["peer"] == "graphc-cupy" and "median_ms" in r), None)
        print(f"\nS={key}")
        print(f"{'peer':12s} {'median ms':>10s} {'min ms':>8s} {'graphc is':>10s} "
              f"{'rel. error':>10s} {'peak MiB':>9s}")
        for r in rows:
            if "error" in r:
                print(f"{r['peer']:12s} failed: {r['error']}")
                continue
            # GPU peers are compared with graphc's GPU backend, CPU peers with numba
            base = gpu if r["peer"] in GPU_PEERS else g
            ratio = f"{r['median_ms'] / base['median_ms']:.2f}x" if base else "-"
            err = f"{r['rel_err']:.1e}" if "rel_err" in r else "-"
            print(f"{r['peer']:12s} {r['median_ms']:10.1f} {r['min_ms']:8.1f} {ratio:>10s} "
                  f"{err:>10s} {r['peak_mib']:9.0f}")
    print("\n'graphc is' = peer time / graphc time (above 1: graphc is faster); GPU peers "
          "against graphc-cupy, CPU peers against graphc (numba); peak MiB: the peer's "
          "memory growth by its first call of that S")
    if args.plot:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        note = (f"python benchmarks/transformer_layer.py {' '.join(argv or sys.argv[1:])}; "
                f"{os.cpu_count()} CPUs, load {load:.1f}; median of {turns.calls(args.repeat, args.rounds)} runs, "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        _plot().write_bar_chart(args.plot, f"textbook encoder layer (d={D}, {H} heads, "
                                f"ffn={FF}, fp32, batch 1): ms per call", panels,
                                unit="ms", note=note)
        print(f"chart: {args.plot}")
    return 0


def _plot():
    """benchmarks/plot.py, loaded from beside this file (it is not a package)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plot.py")
    spec = importlib.util.spec_from_file_location("graphc_benchmarks_plot", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":
    sys.exit(main())
