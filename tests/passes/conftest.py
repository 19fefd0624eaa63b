import numpy as np
import pytest

import graphc


def rel_err(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture
def same_result():
    """assert that two graphs compute the same on random inputs (float64 reference)."""
    def check(g1, g2, tol=1e-10, sizes=None, seed=None):
        from graphc.runtime.inputs import random_inputs
        rng = np.random.default_rng(seed)
        arrays, bindings = random_inputs(g1, rng, sizes)
        a = graphc.compile(g1, backend="reference", float64=True)(*arrays)
        b = graphc.compile(g2, backend="reference", float64=True)(*arrays)
        a = a if isinstance(a, tuple) else (a,)
        b = b if isinstance(b, tuple) else (b,)
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x.shape == y.shape
            assert rel_err(y, x) < tol
    return check
