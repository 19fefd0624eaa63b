"""The backend tests' collection rule (the kernel cache is tests/conftest.py's)."""
import pytest


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
