"""One executable called from several threads at once: every call gets its own correct
result. The compiled backends keep intermediates in a per-size arena and their kernels
and BLAS release the GIL, so unserialised calls of the same size would overwrite each
other's intermediates."""
import threading

import numpy as np
import pytest

import graphc
from graphc import spec


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_concurrent_calls(backend, rng):
    w = rng.standard_normal((256, 256)).astype(np.float32) / 16

    def f(x, g):
        h = graphc.rmsnorm(x, g, eps=1e-6)
        return graphc.softmax(h @ graphc.constant(w, name="W"), axis=-1) * 3.0 + h

    gr = graphc.trace(f, spec(("S", 256), "float32"), spec((256,), "float32"))
    exe = graphc.compile(gr, backend=backend)
    g = (rng.random(256) + 0.5).astype(np.float32)
    # two threads per size: same-size calls share an arena, new sizes touch the LRU
    xs = [rng.standard_normal((S, 256)).astype(np.float32) for S in (384, 384, 200, 200)]
    want = [exe(x, g) for x in xs]                 # one at a time
    errors = []

    def worker(k):
        for _ in range(15):
            got = exe(xs[k], g)
            if not np.array_equal(got, want[k]):
                errors.append((k, float(np.abs(got - want[k]).max())))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"calls from 4 threads gave wrong results: {errors[:5]}"
