"""The attention forms real models write, fused into one attention step or not, on the
numba backend (CPU): each form compiled at O2 (the attention rule fires) and at O2 without
``fuse_patterns`` (the scores materialised, as before the rule knew the form), each peer in
its own process, medians of several calls, the ratio printed.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/attention_forms.py
    python benchmarks/attention_forms.py --batch 2 --seq 256 --repeat 5 --forms padding,gqa_hf
    python benchmarks/attention_forms.py --plot docs/benchmarks_attention_forms.svg  # a chart

Forms (q [B, H, S, D], k/v [B, KV, S, D] or [B, H, S, D]): ``padding`` (causal + an additive
padding mask [B, 1, 1, S]), ``window`` (a sliding-window bool mask built from aranges,
masked_fill), ``gqa_hf`` (kv repeated by transformers' repeat_kv: expand + reshape),
``gqa_bcast`` (GQA as a broadcasting matmul over [B, KV, G, S, D]). Every result is
checked against a float64 NumPy computation of the same formula.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from graphc.timing import blas_report

FORMS = ("padding", "window", "gqa_hf", "gqa_bcast")


def build(form: str, H: int, KV: int, D: int, window: int):
    import graphc
    scale = D ** -0.5

    if form == "padding":
        def fn(q, k, v, keep):
            S = q.shape[2]
            pad = graphc.where(keep[:, None, None, :] != 0, 0.0, -1e9).astype("float32")
            w = q @ k.transpose(0, 1, 3, 2) * scale + graphc.causal_mask(S, S) + pad
            return graphc.softmax(w, axis=-1) @ v
        kv_heads = H
    elif form == "window":
        def fn(q, k, v, keep):
            S = q.shape[2]
            i, j = graphc.arange(S)[:, None], graphc.arange(S)[None, :]
            hidden = (j > i) | (i - j >= window)
            w = (q @ k.transpose(2, 3) * scale).masked_fill(hidden, -np.inf)
            return w.softmax(dim=-1) @ v
        kv_heads = H
    elif form == "gqa_hf":
        def rep(t):
            B, n, S, d = t.shape
            return t[:, :, None].expand(B, n, H // KV, S, d).reshape(B, H, S, d)

        def fn(q, k, v, keep):
            S = q.shape[2]
            w = q @ rep(k).transpose(2, 3) * scale + graphc.causal_mask(S, S)
            return w.softmax(dim=-1) @ rep(v)
        kv_heads = KV
    elif form == "gqa_bcast":
        def fn(q, k, v, keep):
            B, _, S, d = q.shape
            qg = q.reshape(B, KV, H // KV, S, d)
            w = qg @ k[:, :, None].transpose(0, 1, 2, 4, 3) * scale + graphc.causal_mask(S, S)
            return (w.softmax(dim=-1) @ v[:, :, None]).reshape(B, H, S, d)
        kv_heads = KV
    else:
        raise SystemExit(f"unknown form {form!r}; forms: {', '.join(FORMS)}")
    specs = [graphc.spec(("B", H, "S", D)), graphc.spec(("B", kv_heads, "S", D)),
             graphc.spec(("B", kv_heads, "S", D)), graphc.spec(("B", "S"), "int64")]
    return graphc.trace(fn, *specs), kv_heads


def reference(form, q, k, v, keep, window):
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    H, KV = q.shape[1], k.shape[1]
    k, v = np.repeat(k, H // KV, 1), np.repeat(v, H // KV, 1)
    S = q.shape[2]
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    i, j = np.arange(S)[:, None], np.arange(S)[None, :]
    hidden = np.broadcast_to(j > i, s.shape)
    if form == "window":
        hidden = hidden | (i - j >= window)
    if form == "padding":
        s = s + np.where(keep[:, None, None, :] != 0, 0.0, -1e9)
    s = np.where(hidden, -np.inf, s)
    s = np.exp(s - s.max(-1, keepdims=True))
    return (s / s.sum(-1, keepdims=True)) @ v


def child(args) -> None:
    """One peer in this process: compile, check, time; print one JSON line."""
    import time
    import graphc
    from graphc.lower.program import AttentionStep
    from graphc.passes.manager import plan_pipeline
    g, kv_heads = build(args.form, args.heads, args.kv_heads, args.dim, args.window)
    level = "O2"
    if args.variant == "unfused":
        level = [s.name for s in plan_pipeline("O2", (), None) if s.name != "fuse_patterns"]
    exe = graphc.compile(g, backend="numba", level=level)
    rng = np.random.default_rng(0)
    B, S, D = args.batch, args.seq, args.dim
    q = rng.standard_normal((B, args.heads, S, D)).astype(np.float32)
    k = rng.standard_normal((B, kv_heads, S, D)).astype(np.float32)
    v = rng.standard_normal((B, kv_heads, S, D)).astype(np.float32)
    keep = (np.arange(S)[None] < np.linspace(S, S // 2, B).astype(int)[:, None]).astype(np.int64)
    out = exe(q, k, v, keep)
    want = reference(args.form, q, k, v, keep, args.window)
    err = float(np.linalg.norm(out - want) / np.linalg.norm(want))
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        exe(q, k, v, keep)
        times.append(time.perf_counter() - t0)
    fused = sum(isinstance(s, AttentionStep) for s in exe.program.steps)
    print(json.dumps({"ms": 1e3 * float(np.median(times)), "err": err, "fused": fused}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--forms", default=",".join(FORMS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--plot", metavar="FILE.svg",
                   help="also draw the medians as an SVG bar chart into FILE.svg")
    p.add_argument("--child", nargs=2, metavar=("FORM", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.plot and not args.plot.endswith(".svg"):
        p.error(f"--plot writes SVG: give a file name ending in .svg, got {args.plot!r}")
    if args.child:
        args.form, args.variant = args.child
        child(args)
        return 0
    print(blas_report())
    print(f"B={args.batch} S={args.seq} H={args.heads} KV={args.kv_heads} D={args.dim}, "
          f"numba, medians of {args.repeat} calls, each peer in its own process")
    print(f"{'form':10} {'fused ms':>9} {'unfused ms':>11} {'unfused/fused':>14} "
          f"{'attention steps':>16} {'rel err':>9}")
    base = [sys.executable, os.path.abspath(__file__)] + [
        f"--{k.replace('_', '-')}={getattr(args, k)}"
        for k in ("batch", "seq", "heads", "kv_heads", "dim", "window", "repeat")]
    panels = []
    for form in args.forms.split(","):
        res = {}
        for variant in ("fused", "unfused"):
            out = subprocess.run(base + ["--child", form, variant], capture_output=True,
                                 text=True)
            if out.returncode != 0:
                print(f"{form}: {variant} failed:\n{out.stderr[-2000:]}")
                return 1
            res[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        f, u = res["fused"], res["unfused"]
        panels.append((f"{form} ({u['ms'] / f['ms']:.1f}x)",
                       [("fused", f["ms"]), ("unfused", u["ms"])]))
        print(f"{form:10} {f['ms']:9.2f} {u['ms']:11.2f} {u['ms'] / f['ms']:14.2f} "
              f"{f['fused']:>8} vs {u['fused']:<5} {max(f['err'], u['err']):9.1e}")
    if args.plot:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        note = (f"python benchmarks/attention_forms.py {' '.join(argv or sys.argv[1:])}; "
                f"{os.cpu_count()} CPUs, load {load:.1f}; median of {args.repeat} calls, "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        _plot().write_bar_chart(
            args.plot, f"attention forms on numba, fused into one step or not (B={args.batch}, "
            f"S={args.seq}, H={args.heads}, KV={args.kv_heads}, D={args.dim}): ms per call",
            panels, unit="ms", note=note, highlight=("fused",))
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
