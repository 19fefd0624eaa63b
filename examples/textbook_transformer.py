"""Trace the seed's textbook Transformer, print its IR, compile it with Numba, print the
fused kernels, check the result against float64 and time it against the reference.

    python examples/textbook_transformer.py

The first run compiles the kernels (about a minute on two cores; they are cached under
~/.cache/graphc, so the next run starts in seconds).
"""
import sys
import time

import numpy as np

import graphc
from graphc.models import transformer
from graphc.timing import run_timed

# 1. A small model with seeded random weights (2 post-norm layers, 4 heads, causal).
config = transformer.TransformerConfig(vocab_size=1000, d_model=64, n_heads=4, d_ff=256,
                                       n_layers=2, causal=True)
model = transformer.random(config, seed=0)

# 2. Trace it for a symbolic sequence length S: one graph serves every length.
graph = model.trace("S")
print("# 1. the IR as traced (one line per op, with the model's source line)")
print(graph)
print(f"\n{len(graph)} nodes; ops: {graph.op_counts()}\n")

# 3. Compile it for the CPU with Numba at O2: rewrite rules (attention, GEMM epilogues,
#    layernorm), fusion into kernels, a schedule and one memory arena.
print("# 2. compiling for numba (O2) ...", file=sys.stderr, flush=True)
t0 = time.perf_counter()
exe = graphc.compile(graph, backend="numba")
t_compile = time.perf_counter() - t0
steps = exe.program.steps
print(f"# 2. compiled for numba in {t_compile:.1f} s: {len(steps)} steps, "
      f"{len(exe.kernels)} generated loop kernels (BLAS for the GEMMs, a blockwise "
      "attention)")
print(f"{'step':>6s}  {'kind':10s} {'fused group (its ops)':44s} {'output':14s} line")
for entry in exe.profile_entries({"S": 16}):
    nid, node, kind, _ = entry
    group = node.meta.get("group") or node.op
    loc = str(node.loc).rsplit("/", 1)[-1] if node.loc else ""
    print(f"{'%' + str(nid):>6s}  {kind:10s} {group[:44]:44s} {str(node.type):14s} {loc}")
first = next(iter(exe.kernels.values()))
print(f"\none generated kernel (loop IR, rendered to Numba):\n{first}\n")

# 4. Run on random tokens: agreement with the float64 oracle and the time against the
#    NumPy reference interpreter.
reference = graphc.compile(graph, backend="reference")
oracle = graphc.compile(graph, backend="reference", float64=True)
rng = np.random.default_rng(0)
print("# 3. numba against the float64 reference, and its speed against the reference "
      "interpreter (median of 5 calls)")
for S in (16, 100):
    ids = rng.integers(0, config.vocab_size, size=S)
    probs, _, t_numba = run_timed(lambda: exe(ids), 5)
    _, _, t_ref = run_timed(lambda: reference(ids), 5)
    ref = oracle(ids)
    err = np.linalg.norm(probs - ref) / np.linalg.norm(ref)
    print(f"S={S:4d}: output {probs.dtype}{list(probs.shape)}, rows sum to 1: "
          f"{np.allclose(probs.sum(-1), 1, atol=1e-5)}, relative error vs float64 "
          f"{err:.2e} ({'ok' if err < 1e-5 else 'TOO LARGE'}); numba {t_numba * 1e3:.2f} "
          f"ms, reference {t_ref * 1e3:.2f} ms: {t_ref / t_numba:.1f}x faster")
    assert err < 1e-5
