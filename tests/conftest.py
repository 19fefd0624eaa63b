"""Shared fixtures for the whole test suite."""
import os
import secrets

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A NumPy Generator seeded from a fresh random seed (or ``GRAPHC_TEST_SEED``).

    The seed is printed, so a failing test shows it under "Captured stdout setup";
    rerun with ``GRAPHC_TEST_SEED=<seed> pytest <test id>`` to reproduce.
    """
    env = os.environ.get("GRAPHC_TEST_SEED")
    seed = int(env) if env else secrets.randbits(32)
    print(f"rng seed for {request.node.nodeid}: {seed} (rerun with GRAPHC_TEST_SEED={seed})")
    return np.random.default_rng(seed)
