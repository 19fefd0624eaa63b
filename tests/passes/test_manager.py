"""PassManager, pipelines and instruments."""
import io

import numpy as np
import pytest

import graphc
from graphc.passes import (DumpIR, NumericCheck, NumericError, PassManager,
                           TimePasses, VerifyIR, optimize, register_pass, unregister_pass)
from graphc.passes.manager import PIPELINES, PassError
from graphc.passes.rewrite import replace
from graphc.models import transformer


def small_model(**kw):
    cfg = transformer.TransformerConfig(vocab_size=50, d_model=16, n_heads=2, d_ff=32,
                                        n_layers=1, max_len=32, **kw)
    return transformer.random(cfg, seed=1)


def test_levels_and_unknown_names():
    assert PIPELINES["O0"] == []
    assert PIPELINES["O1"] == ["simplify", "fold", "cse", "dce"]
    assert set(PIPELINES["O1"]) <= set(PIPELINES["O2"])
    with pytest.raises(PassError, match="unknown pass 'nope'"):
        PassManager(["simplify", "nope"])
    with pytest.raises(PassError, match="unknown optimisation level"):
        PassManager("O7")


def test_optimize_leaves_the_input_graph_alone():
    g = small_model().trace()
    before = str(g)
    out = optimize(g, "O1")
    assert str(g) == before
    assert out is not g


def test_dump_after_chosen_passes():
    buf = io.StringIO()
    g = small_model().trace()
    optimize(g, ["simplify", "cse", "dce"], instruments=[DumpIR(after=["cse"], stream=buf)])
    text = buf.getvalue()
    assert text.count("// after ") == 1 and "// after cse" in text
    assert "graph transformer" in text
    buf = io.StringIO()
    optimize(g, ["dce"], instruments=[DumpIR(dot=True, stream=buf)])
    assert buf.getvalue().startswith('digraph "transformer"')


def test_time_passes_reports_every_pass():
    t = TimePasses()
    optimize(small_model().trace(), "O1", instruments=[t])
    assert [n for n, _ in t.times] == PIPELINES["O1"]
    assert all(s >= 0 for _, s in t.times)
    assert "simplify" in t.report() and "total" in t.report()


def test_numeric_check_names_a_planted_sign_flip():
    @register_pass("planted_sign_flip")
    def planted(graph):
        # A buggy "optimisation": rewrites the first relu as -relu.
        for node in list(graph):
            if node.op == "relu":
                x = node.inputs[0]
                replace(graph, node.id, lambda b: graphc.neg(graphc.relu(b.wrap(x))))
                break
        return graph
    try:
        g = small_model().trace()
        check = NumericCheck(seed=3)
        with pytest.raises(NumericError) as info:
            optimize(g, ["simplify", "cse", "planted_sign_flip", "dce"],
                     instruments=[check])
        msg = str(info.value)
        assert "planted_sign_flip" in msg
        assert "output 0" in msg and "relative error" in msg
        # The passes before it were checked and passed.
        assert [n for n, _ in check.history] == ["simplify", "cse"]
    finally:
        unregister_pass("planted_sign_flip")


def test_numeric_check_accepts_correct_pipelines():
    check = NumericCheck(seed=5, trials=2)
    optimize(small_model(causal=True).trace(), "O1", instruments=[VerifyIR(), check])
    assert len(check.history) == len(PIPELINES["O1"])
    assert all(err <= check.tol for _, err in check.history)


def test_verify_instrument_catches_a_pass_that_breaks_types():
    @register_pass("planted_bad_type")
    def bad(graph):
        for node in graph:
            if node.op == "relu":
                node.type = graphc.TensorType(node.type.shape, "float64")
                break
        return graph
    try:
        with pytest.raises(graphc.VerifyError, match="after pass 'planted_bad_type'"):
            optimize(small_model().trace(), ["planted_bad_type"], instruments=[VerifyIR()])
    finally:
        unregister_pass("planted_bad_type")


def test_a_pass_must_return_a_graph():
    register_pass("planted_returns_none")(lambda g: None)
    try:
        with pytest.raises(PassError, match="returned NoneType"):
            optimize(small_model().trace(), ["planted_returns_none"])
    finally:
        unregister_pass("planted_returns_none")


def test_compile_runs_the_pipeline_and_matches_reference():
    rng = np.random.default_rng()
    m = small_model(causal=True)
    g = m.trace()
    ids = rng.integers(0, 50, size=11)
    oracle = graphc.compile(g, backend="reference", float64=True)(ids)
    for level in ("O0", "O1"):
        out = graphc.compile(g, backend="reference", level=level)(ids)
        assert np.linalg.norm(out - oracle) / np.linalg.norm(oracle) < 1e-5


def test_builtin_passes_declare_what_they_keep():
    from graphc.passes import pass_info
    assert pass_info("schedule").keeps("fuse") and not pass_info("schedule").keeps(
        "plan_memory")
    assert pass_info("plan_memory").keeps("fuse") and pass_info("plan_memory").keeps(
        "schedule")
    assert not pass_info("simplify").keeps("fuse")
    # they run on any graph: none requires another (lowering requires them, in order)
    assert all(not pass_info(n).requires for n in PIPELINES["O2"])
    g = small_model().trace()
    assert not pass_info("fuse").holds(g)
    done = optimize(g, "O2")
    assert pass_info("fuse").holds(done) and pass_info("plan_memory").holds(done)
    with pytest.raises(PassError, match="unknown pass"):
        pass_info("nope")
