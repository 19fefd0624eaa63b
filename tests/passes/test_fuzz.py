"""Differential fuzzing: random graphs through the full pipeline compute what they
computed before (float64 reference, relative error 1e-10), with the IR verified after
every pass. GRAPHC_FUZZ_GRAPHS sets how many (default 240; the first 60 in the quick suite,
the others marked slow)."""
import os

import numpy as np
import pytest

import graphc
from graphc.passes import VerifyIR, optimize
from graphc.runtime.inputs import random_inputs
from random_graphs import random_graph

N = int(os.environ.get("GRAPHC_FUZZ_GRAPHS", "240"))
QUICK = 60      # graphs in the quick suite; the rest of the N are marked slow
BASE = int(os.environ.get("GRAPHC_FUZZ_SEED", np.random.SeedSequence().entropy % 10**6))
LEVEL = "O2"


def rel(a, b):
    """||a - b|| relative to ||b||, or to 1 when ||b|| < 1: an output that cancels to
    rounding noise (mean(x - mean(x)) ~ 1e-17) has no meaningful relative error, while
    a wrong rewrite still misses by O(1) (the graphs' values are O(1))."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1.0))


@pytest.mark.parametrize("k", [pytest.param(k, marks=[pytest.mark.slow] if k >= QUICK else [])
                               for k in range(N)])
def test_pipeline_preserves_semantics(k):
    seed = BASE + k
    g = random_graph(seed)
    try:
        out = optimize(g, LEVEL, instruments=[VerifyIR()])
    except graphc.GraphcError as e:  # pragma: no cover - the message is the diagnosis
        pytest.fail(f"seed {seed}: pipeline failed: {e}\n{g}")
    rng = np.random.default_rng(seed)
    for size in (1, 6):
        arrays, _ = random_inputs(g, rng, {"S": size})
        a = graphc.compile(g, backend="reference", level="O0")(*arrays)
        b = graphc.compile(out, backend="reference", level="O0")(*arrays)
        a = a if isinstance(a, tuple) else (a,)
        b = b if isinstance(b, tuple) else (b,)
        for i, (x, y) in enumerate(zip(a, b)):
            assert x.shape == y.shape
            err = rel(y, x)
            assert err < 1e-10, (f"seed {seed} (GRAPHC_FUZZ_SEED={seed} GRAPHC_FUZZ_GRAPHS=1), "
                                 f"S={size}, output {i}: error {err:.3e}\n{g}\n{out}")


def test_fuzzer_covers_the_rules():
    """The generator makes the forms the rules target, so the fuzzing exercises them."""
    from collections import Counter
    from graphc.passes import Explain
    fired = Counter()
    for seed in range(60):
        ex = Explain()
        optimize(random_graph(seed), ["simplify", "cse", "dce", "fuse_patterns"],
                 instruments=[ex])
        fired.update(e["rule"] for e in ex.fired())
    names = " ".join(fired)
    for op in ("attention", "gemm", "layernorm", "rmsnorm", "add_layernorm"):
        assert op in names, (op, fired)
