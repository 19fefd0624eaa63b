"""One pipeline: passes declare what they need and keep, the manager adds what a pipeline
lacks, graphc.compile lowers once and hands the Program to a program backend (which runs
no passes), graph backends get the graph; third-party backends of either kind work."""
from importlib.metadata import EntryPoint

import numpy as np
import pytest

import graphc
from graphc.backends.reference import ReferenceBackend, ReferenceExecutable
from graphc.lower.program import Program
from graphc.passes import (Explain, PassManager, TimePasses, optimize, register_pass,
                           unregister_pass)
from graphc.passes.manager import PIPELINES, PassError, plan_pipeline, resolve_pipeline
from graphc.runtime import backends as B

LOWER = B.LOWERING_REQUIRES


def block_graph(S="S"):
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)

    def block(x):
        return graphc.softmax(graphc.scale(graphc.relu(x @ w), 0.5) * 1.0, axis=-1)
    return graphc.trace(block, graphc.spec((S, 8), "float32"))


def computing_ops(g):
    return {n.op for n in g.nodes.values() if n.op not in ("input", "constant")}


def test_lowering_requirements_are_added_where_missing():
    assert LOWER == ("fuse", "schedule", "plan_memory")
    assert resolve_pipeline(["simplify"], LOWER) == ["simplify", "fuse", "schedule",
                                                     "plan_memory"]
    assert resolve_pipeline("O0", LOWER) == list(LOWER)
    assert resolve_pipeline("O1", LOWER) == PIPELINES["O1"] + list(LOWER)
    assert resolve_pipeline("O2", LOWER) == PIPELINES["O2"]          # has them all
    assert resolve_pipeline("O2") == PIPELINES["O2"]
    # a pass after them undoes them, so they run again
    assert resolve_pipeline(PIPELINES["O2"] + ["dce"], LOWER)[-4:] == ["dce", *LOWER]
    # schedule keeps a fusion, plan_memory keeps everything
    assert resolve_pipeline(["fuse", "schedule"], LOWER) == list(LOWER)
    # a memory plan made before schedule is stale after it
    assert resolve_pipeline(["fuse", "plan_memory", "schedule"], LOWER) == \
        ["fuse", "plan_memory", "schedule", "plan_memory"]
    steps = plan_pipeline(["simplify"], LOWER, required_by="lowering")
    assert [(s.name, s.required_by) for s in steps] == [
        ("simplify", None), ("fuse", "lowering"), ("schedule", "lowering"),
        ("plan_memory", "lowering")]


def test_the_input_graph_counts():
    """A graph that already has a result (optimised earlier) does not get it again."""
    g = block_graph()
    assert resolve_pipeline("O0", LOWER, graph=g) == list(LOWER)
    fused = optimize(g, ["fuse"])
    assert resolve_pipeline("O0", LOWER, graph=fused) == ["schedule", "plan_memory"]
    done = optimize(g, "O2")
    assert resolve_pipeline("O0", LOWER, graph=done) == []
    assert PassManager("O0", requires=LOWER).steps(done) == []


def test_a_pass_declares_what_it_requires():
    @register_pass("planted_needs_fusion", requires=["fuse"])
    def needs(graph):
        assert computing_ops(graph) <= {"fused"}
        return graph

    @register_pass("planted_cycle_a", requires="planted_cycle_b")
    def a(graph):
        return graph

    @register_pass("planted_cycle_b", requires="planted_cycle_a")
    def b(graph):
        return graph
    try:
        assert resolve_pipeline(["planted_needs_fusion"]) == ["fuse", "planted_needs_fusion"]
        assert resolve_pipeline(["fuse", "dce", "planted_needs_fusion"]) == \
            ["fuse", "dce", "fuse", "planted_needs_fusion"]
        ex, timer = Explain(), TimePasses()
        out = optimize(block_graph(), ["simplify", "planted_needs_fusion"], [ex, timer])
        assert computing_ops(out) == {"fused"}
        assert [n for n, _ in timer.times] == ["simplify", "fuse", "planted_needs_fusion"]
        (req,) = [e for e in ex.events if e["kind"] == "required"]
        assert req["pass"] == "fuse" and req["required_by"] == "planted_needs_fusion"
        with pytest.raises(PassError, match="cycle"):
            PassManager(["planted_cycle_a"])
        register_pass("planted_needs_nothing_known", requires=["nope"])(lambda g: g)
        with pytest.raises(PassError, match="unknown pass 'nope'"):
            PassManager(["planted_needs_nothing_known"])
    finally:
        for name in ("planted_needs_fusion", "planted_cycle_a", "planted_cycle_b",
                     "planted_needs_nothing_known"):
            unregister_pass(name)


class Recorder(B.ProgramBackend):
    """A third-party program backend: records what it was given; runs the reference."""
    name = "recorder"
    programs: list = []

    @staticmethod
    def compile_program(program, **options):
        Recorder.programs.append(program)
        return ReferenceExecutable(program.graph)


class GraphOnly:
    """A third-party backend of the old interface: a class with compile(graph)."""
    name = "graph-only"
    graphs: list = []

    @staticmethod
    def compile(graph, **options):
        GraphOnly.graphs.append(graph)
        return ReferenceExecutable(graph)


def test_compile_lowers_once_and_hands_the_program_over(rng):
    g = block_graph()
    x = rng.standard_normal((5, 8)).astype(np.float32)
    want = graphc.compile(g, backend="reference", float64=True)(x)
    Recorder.programs.clear()
    for level in ("O0", ["simplify"], "O1", "O2"):
        exe = graphc.compile(g, backend=Recorder, level=level)
        program = Recorder.programs[-1]
        assert isinstance(program, Program)
        assert computing_ops(program.graph) == {"fused"}
        assert "memory" in program.graph.meta and "schedule" in program.graph.meta
        np.testing.assert_allclose(exe(x), want, rtol=1e-5, atol=1e-6)
    ex = Explain()
    graphc.compile(g, backend=Recorder, level=["simplify"], instruments=[ex])
    required = [(e["pass"], e["required_by"]) for e in ex.events if e["kind"] == "required"]
    assert required == [("fuse", "the recorder backend's lowering"),
                        ("schedule", "the recorder backend's lowering"),
                        ("plan_memory", "the recorder backend's lowering")]
    # compile_many without a batch hook: one compile_program per graph
    Recorder.programs.clear()
    assert len(graphc.compile_many([g, g], backend=Recorder)) == 2
    assert len(Recorder.programs) == 2
    # the class itself compiles a graph through the same pipeline
    exe = Recorder.compile(g)
    assert computing_ops(Recorder.programs[-1].graph) == {"fused"}
    np.testing.assert_allclose(exe(x), want, rtol=1e-5, atol=1e-6)


def test_graph_backends_get_the_graph_at_its_level(monkeypatch):
    g = block_graph()
    assert B.backend_takes(ReferenceBackend) == "graph"
    assert B.backend_requires(ReferenceBackend) == ()
    assert B.backend_takes(GraphOnly) == "graph"
    assert B.backend_takes(Recorder) == "program"
    assert B.backend_requires(Recorder) == LOWER
    # the reference interprets the graph as traced at O0 (no pass runs, no copy)
    assert graphc.compile(g, backend="reference", level="O0").graph is g
    assert "fused" not in computing_ops(graphc.compile(g, backend="reference", level="O1")
                                        .graph)
    # a third-party backend found through the entry point group
    eps = [EntryPoint("graph-only", f"{__name__}:GraphOnly", "graphc.backends"),
           EntryPoint("recorder", f"{__name__}:Recorder", "graphc.backends")]
    monkeypatch.setattr(B, "entry_points", lambda group: eps if group == "graphc.backends"
                        else [])
    assert {"graph-only", "recorder", "numba"} <= set(B.available_backends())
    GraphOnly.graphs.clear()
    graphc.compile(g, backend="graph-only")
    assert "fused" in computing_ops(GraphOnly.graphs[-1])        # O2 by default
    graphc.compile(g, backend="graph-only", level="O0")
    assert GraphOnly.graphs[-1] is g
    Recorder.programs.clear()
    graphc.compile(g, backend="recorder", level="O0")
    assert isinstance(Recorder.programs[-1], Program)


def test_a_backend_must_say_what_it_takes():
    class Nothing:
        name = "nothing"

    class Wrong(B.Backend):
        takes = "tensor"
    with pytest.raises(graphc.BackendError, match="takes a graph but has no compile"):
        graphc.compile(block_graph(), backend=Nothing)
    with pytest.raises(graphc.BackendError, match="takes must be"):
        B.backend_takes(Wrong)


def test_compiled_backends_run_no_passes(monkeypatch, rng):
    """numba and cupy get a Program; neither module runs a pass any more."""
    import graphc.backends.cupy_gpu as cpk
    import graphc.backends.numba_cpu as nbk
    for mod in (nbk, cpk):
        assert not hasattr(mod, "REQUIRED") and not hasattr(mod, "optimize")
        assert not hasattr(mod, "lower")
    assert B.backend_takes(nbk.NumbaBackend) == B.backend_takes(cpk.CupyBackend) == \
        B.backend_takes(cpk.CupyEmulatedBackend) == "program"
    runs = []
    real = PassManager.run
    monkeypatch.setattr(PassManager, "run", lambda self, g: (runs.append(self.ran), real(
        self, g))[1])
    g = block_graph()
    x = rng.standard_normal((3, 8)).astype(np.float32)
    want = graphc.compile(g, backend="reference", float64=True)(x)
    runs.clear()
    exe = graphc.compile(g, backend="numba", level=["simplify"])
    assert len(runs) == 1
    assert computing_ops(exe.graph) == {"fused"}
    np.testing.assert_allclose(exe(x), want, rtol=1e-5, atol=1e-6)
    done = optimize(g, "O2")
    runs.clear()
    exe = graphc.compile(done, backend="numba", level="O0")   # nothing left to run
    assert runs == [] and exe.graph is done
    np.testing.assert_allclose(exe(x), want, rtol=1e-5, atol=1e-6)
