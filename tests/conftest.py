"""Shared fixtures for the whole test suite.

The quick suite (``python -m pytest -q``) leaves out the tests marked ``slow`` (pyproject's
addopts: ``-m "not slow"``); ``python -m pytest -m slow`` runs those, ``-m ""`` everything.
"""
import os
import secrets

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def session_kernel_cache(tmp_path_factory):
    """One kernel cache for the whole run (Numba modules and the CUDA emulation's
    libraries), never the user's ``~/.cache``: a temporary folder, or
    ``$GRAPHC_TEST_CACHE_DIR`` when that is set (to share compiled kernels between runs:
    .ci/run's quick and slow runs). Under pytest-xdist the workers share the folder (the
    cache is safe for concurrent writers), so a kernel that tests on two workers need is
    compiled once, not once per worker."""
    path = os.environ.get("GRAPHC_TEST_CACHE_DIR")
    if not path:
        base = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            base = base.parent            # this run's folder, shared by its workers
        folder = base / "graphc-kernel-cache"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = str(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHC_TEST_CACHE_DIR", path)
        mp.setenv("GRAPHC_CACHE_DIR", path)
        if os.environ.get("PYTEST_XDIST_WORKER") and "GRAPHC_COMPILE_JOBS" not in os.environ:
            # Every core already runs a test worker: compile worker processes (each ~2.5 s
            # of start-up and Numba warm-up) would only compete with them (the textbook
            # model's cold compile on a loaded 2-core machine: 12-15 s in the process,
            # 18-20 s with two workers). tests/backends/test_numba_cache.py sets its own.
            mp.setenv("GRAPHC_COMPILE_JOBS", "1")
        yield path


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
