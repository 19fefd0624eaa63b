"""Timing helpers shared by the CLI (``graphc run`` / ``compare``) and the benchmarks."""
from __future__ import annotations

import time

import numpy as np


def run_timed(fn, repeat: int):
    """(output, seconds of the first call of ``fn()``, median seconds of ``repeat`` more)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return out, first, float(np.median(times))


def decode_rate(generate, new_tokens: int, repeat: int) -> float:
    """Tokens/s of greedy decoding, ``generate(n)`` making n new tokens: the median over
    ``repeat`` rounds of ``new_tokens`` / (time of n = new_tokens + 1 - time of n = 1), so
    the prompt's prefill cancels out; NaN when ``new_tokens`` < 1."""
    if new_tokens < 1:
        return float("nan")
    generate(2)                                                  # warm-up
    rates = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        generate(1)
        t1 = time.perf_counter()
        generate(new_tokens + 1)
        t2 = time.perf_counter()
        rates.append(new_tokens / max((t2 - t1) - (t1 - t0), 1e-9))
    return float(np.median(rates))
