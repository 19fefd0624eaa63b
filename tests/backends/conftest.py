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


# The cupy-emu runs of the attention forms cost 10-40 s each (every emulated GPU thread an
# OS thread, a g++ compile each): the quick suite keeps the first cupy-emu case of each
# test function (the numba runs of every form stay quick), -m slow runs the rest.
EMULATED_SWEEPS = ("test_attention_forms.py",)


def pytest_collection_modifyitems(config, items):
    seen = set()
    for item in items:
        if not item.nodeid.split("::")[0].endswith(EMULATED_SWEEPS):
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("backend") != "cupy-emu":
            continue
        fn = item.nodeid.split("[")[0]
        if fn in seen:
            item.add_marker(pytest.mark.slow)
        seen.add(fn)
