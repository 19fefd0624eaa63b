"""Fixtures for the backend tests: a kernel cache of the session's own.

Every test in this folder compiles through the Numba kernel cache; it must not write to the
user's ``~/.cache``. The cache lives in one temporary folder for the whole session (so
identical kernels compile once), or in ``$GRAPHC_TEST_CACHE_DIR`` when that is set (to
keep a warm cache between runs while working on the tests).
"""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def graphc_cache_dir(tmp_path_factory):
    path = os.environ.get("GRAPHC_TEST_CACHE_DIR") or str(tmp_path_factory.mktemp("graphc-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHC_CACHE_DIR", path)
        yield path
