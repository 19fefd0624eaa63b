"""graphc's flash-attention kernel (cupy backend) against PyTorch's
``scaled_dot_product_attention`` on the same GPU, fp32, causal and not.

    python benchmarks/attention.py                      # S=4096, 12 heads of 64
    python benchmarks/attention.py --seq 1024,4096 --heads 16 --dim 128

Prints median ms (CUDA-synchronised, after a warm-up) per peer, TFLOP/s (4 S^2 d FLOPs
per head, halved when causal) and graphc's share of PyTorch's throughput, and the
relative error of both against a float64 NumPy run on a slice of the heads. Needs an
NVIDIA GPU with CuPy; PyTorch must be a CUDA build for its column. Without a GPU it says
so and exits 0 (the kernel's correctness without a GPU is tested under emulation).
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np


def reference(q, k, v, scale, causal):
    s = q.astype(np.float64) @ k.astype(np.float64).transpose(0, 2, 1) * scale
    if causal:
        S, T = s.shape[-2:]
        s = np.where(np.arange(T)[None, :] > np.arange(S)[:, None] + (T - S), -np.inf, s)
    s = np.exp(s - s.max(-1, keepdims=True))
    return (s / s.sum(-1, keepdims=True)) @ v.astype(np.float64)


def timed(fn, sync, repeat):
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", default="4096")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    from graphc.timing import blas_report
    print(blas_report())                # the host's (the GPU peers do not use it)
    from graphc.backends.cupy_gpu import gpu_available
    ok, why = gpu_available()
    if not ok:
        print(f"attention benchmark skipped: {why}")
        return 0
    import cupy
    import graphc
    from graphc import spec
    H, D = args.heads, args.dim
    scale = 1 / math.sqrt(D)
    try:
        import torch
        has_torch = torch.cuda.is_available()
    except ImportError:
        has_torch = False
    print(f"attention fp32, {H} heads of {D}; GPU {ok and why}; median of {args.repeat}")
    print(f"{'S':>6s} {'causal':>6s} {'peer':12s} {'ms':>8s} {'TFLOP/s':>8s} "
          f"{'rel. error':>10s}")
    for S in (int(s) for s in args.seq.split(",")):
        rng = np.random.default_rng(0)
        q, k, v = (rng.standard_normal((H, S, D)).astype(np.float32) for _ in range(3))
        for causal in (False, True):
            flops = 4 * H * S * S * D / (2 if causal else 1)
            g = graphc.trace(lambda a, b, c: graphc.ops.attention(a, b, c, scale=scale,
                                                                  causal=causal),
                             spec((H, "S", D)), spec((H, "S", D)), spec((H, "S", D)))
            exe = graphc.compile(g, backend="cupy", device_outputs=True)
            qd, kd, vd = (cupy.asarray(a) for a in (q, k, v))
            ref = reference(q[:1], k[:1], v[:1], scale, causal)
            rows = []
            out = exe(qd, kd, vd)
            t = timed(lambda: exe(qd, kd, vd), cupy.cuda.Device().synchronize, args.repeat)
            rows.append(("graphc-cupy", t, out.get()[:1]))
            if has_torch:
                tq, tk, tv = (torch.from_numpy(a).cuda()[None] for a in (q, k, v))
                f = torch.nn.functional.scaled_dot_product_attention
                o = f(tq, tk, tv, is_causal=causal, scale=scale)
                t = timed(lambda: f(tq, tk, tv, is_causal=causal, scale=scale),
                          torch.cuda.synchronize, args.repeat)
                rows.append(("torch-sdpa", t, o[0, :1].cpu().numpy()))
            for name, t, o in rows:
                err = np.linalg.norm(o - ref) / np.linalg.norm(ref)
                print(f"{S:6d} {str(causal):>6s} {name:12s} {t * 1e3:8.2f} "
                      f"{flops / t / 1e12:8.2f} {err:10.1e}")
            if len(rows) == 2:
                print(f"{'':6s} {'':6s} graphc reaches {rows[1][1] / rows[0][1]:.0%} of "
                      "PyTorch's throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
