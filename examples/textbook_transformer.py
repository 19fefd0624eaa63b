"""Trace the seed's textbook Transformer, print its IR, run it and check the result.

    python examples/textbook_transformer.py
"""
import time

import numpy as np

import graphc
from graphc.models import transformer

# 1. A small model with seeded random weights (2 post-norm layers, 4 heads).
config = transformer.TransformerConfig(vocab_size=1000, d_model=64, n_heads=4, d_ff=256,
                                       n_layers=2, causal=True)
model = transformer.random(config, seed=0)

# 2. Trace it for a symbolic sequence length S: one graph serves every length.
graph = model.trace("S")
print(graph)
print(f"\n{len(graph)} nodes; ops: {graph.op_counts()}\n")

# 3. Compile and run on random tokens; check against the float64 oracle.
exe = graphc.compile(graph, backend="reference")
oracle = graphc.compile(graph, backend="reference", float64=True)
rng = np.random.default_rng(0)
for S in (16, 100):
    ids = rng.integers(0, config.vocab_size, size=S)
    t0 = time.perf_counter()
    probs = exe(ids)
    dt = time.perf_counter() - t0
    ref = oracle(ids)
    err = np.linalg.norm(probs - ref) / np.linalg.norm(ref)
    print(f"S={S:4d}: output {probs.dtype}{list(probs.shape)}, rows sum to 1: "
          f"{np.allclose(probs.sum(-1), 1, atol=1e-5)}, relative error vs float64 "
          f"{err:.2e} ({'ok' if err < 1e-5 else 'TOO LARGE'}), {dt * 1e3:.1f} ms")
    assert err < 1e-5
