"""ONNX's node test cases (onnx.backend.test.case.node) for the ops graphc translates,
through graphc.onnx_backend: counted against the floors recorded in
node_cases_expected.json, so a regression fails. Every case passes or is rejected with
a GraphcError; none may crash or give a wrong answer.

Quick (unmarked): the cases of ~35 of ONNX's case modules on the reference backend
(~400 cases, ~10 s) and a few on numba and cupy-emu. Slow: every case (1055) on the
reference, and one case per op on numba and cupy-emu."""
import json
import os

import pytest

onnx = pytest.importorskip("onnx", reason="needs the 'compare' extra (onnx)")
ort = pytest.importorskip("onnxruntime", reason="needs the 'compare' extra (onnxruntime)")
pytestmark = pytest.mark.compare

from tests.frontend.onnx.node_cases import (EXTRA_MODULES, EXTRA_OPS, OPS,  # noqa: E402
                                            load_cases, module_cases, run_case, spread)

with open(os.path.join(os.path.dirname(__file__), "node_cases_expected.json")) as f:
    EXPECTED = json.load(f)
ORT_FAILS = frozenset(EXPECTED["ort_fails"])
REJECTED = EXPECTED["reference"]["rejected"]

QUICK_MODULES = (
    "add", "mul", "div", "pow", "reshape", "gather", "gatherelements", "gathernd",
    "softmax", "slice", "matmul", "gemm", "reducesum", "reducemax", "where", "einsum",
    "topk", "shape", "expand", "split", "cumsum", "gelu", "unsqueeze", "squeeze", "concat",
    "layernormalization", "rmsnormalization", "rotaryembedding", "trilu", "transpose",
    "rangeop", "argmax", "clip", "constantofshape")
COMPILED_QUICK = ("test_add_bcast", "test_reshape_negative_dim", "test_gather_1",
                  "test_softmax_axis_1", "test_layer_normalization_4d_axis1")


def _check(results, what):
    bad = {n: r for n, r in results.items() if r[0] in ("crash", "fail")}
    assert not bad, f"{what}: cases that crash or give a wrong answer: {bad}"
    new = {n: r[1] for n, r in results.items() if r[0] == "rejected" and n not in REJECTED}
    assert not new, f"{what}: cases rejected that were not before: {new}"
    return sum(r[0] == "pass" for r in results.values())


@pytest.fixture(scope="module")
def quick_cases():
    return module_cases(*QUICK_MODULES)


def test_quick_reference(quick_cases):
    results = {c["name"]: run_case(c, "reference") for c in quick_cases}
    passes = _check(results, "reference")
    assert passes >= EXPECTED["quick_reference_pass_floor"], (passes, len(results))


def test_extra_ops_reference():
    """The ops graphc translates beyond the issue's list (Mod, Round, Pad, Tile, Conv, GroupNormalization, ...):
    their cases pass or are rejected (Pad modes other than constant, ReduceProd of
    data, bfloat16), never wrong."""
    cases = module_cases(*EXTRA_MODULES, ops=OPS | EXTRA_OPS)
    results = {c["name"]: run_case(c, "reference") for c in cases}
    bad = {n: r for n, r in results.items() if r[0] in ("crash", "fail")}
    assert not bad, bad
    assert sum(r[0] == "pass" for r in results.values()) >= 104, results


@pytest.mark.parametrize("backend", ["numba", "cupy-emu"])
def test_quick_compiled(quick_cases, backend):
    picked = [c for c in quick_cases if c["name"] in COMPILED_QUICK]
    assert len(picked) == len(COMPILED_QUICK)
    results = {c["name"]: run_case(c, backend) for c in picked}
    assert all(r[0] == "pass" for r in results.values()), results


@pytest.fixture(scope="module")
def all_cases():
    return load_cases()


@pytest.mark.slow
def test_all_cases_reference(all_cases):
    results = {c["name"]: run_case(c, "reference") for c in all_cases}
    passes = _check(results, "reference")
    assert passes >= EXPECTED["reference"]["pass_floor"], (passes, len(results))
    counted = [n for n in results if n not in ORT_FAILS]
    ok = sum(results[n][0] == "pass" for n in counted)
    assert ok >= 0.97 * len(counted), (ok, len(counted))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numba", "cupy-emu"])
def test_one_case_per_op_compiled(all_cases, backend):
    cases = spread(all_cases, ORT_FAILS)
    results = {c["name"]: run_case(c, backend) for c in cases}
    _check(results, backend)
    failed = {n: r for n, r in results.items() if r[0] != "pass" and n not in REJECTED}
    assert not failed, failed
