"""The backend tests' collection rule (the kernel cache is tests/conftest.py's)."""
import pytest


# The quick suite keeps the first case of these parametrised sweeps and leaves the rest to
# -m slow (each case is a compile of its own; the op matrix runs every op on every
# backend in the quick suite):
# * the cupy-emu runs of the attention forms (the numba runs of every form stay quick);
# * numba fusion groups: one reduction group, norm group, transposed store, operand view,
#   GEMM epilogue and non-pointwise epilogue of each kind.
FIRST_CASE_ONLY = {
    "test_attention_forms.py": lambda params: params.get("backend") == "cupy-emu",
    "test_numba_groups.py": lambda params: bool(params),
}


def pytest_collection_modifyitems(config, items):
    seen = set()
    for item in items:
        rule = FIRST_CASE_ONLY.get(item.nodeid.split("::")[0].rsplit("/", 1)[-1])
        params = getattr(getattr(item, "callspec", None), "params", {})
        if rule is None or not rule(params):
            continue
        fn = item.nodeid.split("[")[0]
        if fn in seen:
            item.add_marker(pytest.mark.slow)
        seen.add(fn)
