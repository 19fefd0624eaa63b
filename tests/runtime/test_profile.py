"""exe.profile(): one timed row per executed step, grouped by what the step computes,
with the user's source line; the outputs of a profiled call are still right."""
import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.models import transformer
from graphc.runtime.profile import describe_ops

BACKENDS = ["reference", "numba", "cupy-emu"]


def _layer(rng):
    cfg = transformer.TransformerConfig(vocab_size=50, d_model=32, n_heads=4, d_ff=64,
                                        n_layers=1)
    return transformer.random(cfg, seed=int(rng.integers(1000))).trace_layer(0, "S")


@pytest.mark.parametrize("backend", BACKENDS)
def test_profile_rows_cover_the_steps(backend, rng):
    g = _layer(rng)
    exe = graphc.compile(g, backend=backend)
    x = rng.standard_normal((24, 32)).astype(np.float32)
    prof = exe.profile(x, repeat=2)
    if backend == "reference":
        og = exe.graph                                    # the optimised graph it runs
        want = [n for n in og.topo_order() if og.nodes[n].op not in ("input", "constant")]
        assert [s.node for s in prof.steps] == [og.nodes[n].name for n in want]
        assert {s.kind for s in prof.steps} == {"op"}
    else:
        steps = exe.program.steps
        # every step that writes its own buffer is timed (views of another are free)
        assert 0 < len(prof.steps) <= len(steps)
        assert {s.kind for s in prof.steps} >= {"gemm", "attention", "kernel"}
    assert all(s.seconds > 0 and s.shape for s in prof.steps)
    assert all(s.loc.startswith("transformer.py:") for s in prof.steps)
    groups = prof.groups()
    assert sum(gr.calls for gr in groups) == len(prof.steps)
    assert sum(gr.seconds for gr in groups) == pytest.approx(prof.step_seconds)
    assert [gr.seconds for gr in groups] == sorted((gr.seconds for gr in groups),
                                                   reverse=True)
    assert sum(prof.by_kind().values()) == pytest.approx(prof.step_seconds)
    assert prof.total > 0
    text = prof.table(top=3)
    assert "S=24" in text and backend.split("-")[0] in text
    assert len(text.splitlines()) == 2 + 3 + 1 + 1       # head, 3 groups, rest, kinds
    # the profiled executable still computes the right thing afterwards
    ref = graphc.compile(g, backend="reference", float64=True)(x)
    got = exe(x)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5


def test_profile_names_the_big_gemm(rng):
    """The GEMM of a [64,512] @ [512,2048] dominates a graph with one small kernel."""
    w = rng.standard_normal((512, 2048)).astype(np.float32)

    def f(x):
        return graphc.relu(x @ graphc.constant(w, name="W")) * 0.5

    exe = graphc.compile(graphc.trace(f, spec((64, 512), "float32")), backend="numba")
    prof = exe.profile(rng.standard_normal((64, 512)).astype(np.float32), repeat=3)
    top = prof.groups()[0]
    assert top.kind == "gemm" and top.shape == (64, 2048)
    assert "matmul" in top.ops and "relu" in top.ops


def test_profile_measures_time_outside_the_steps_within_each_call(rng, monkeypatch):
    """Work between the steps (here 30 ms added where the outputs are handed back) is
    reported as outside the steps, taken from the same calls as the step times."""
    import time
    exe = graphc.compile(_layer(rng), backend="numba")
    x = rng.standard_normal((24, 32)).astype(np.float32)
    quick = exe.profile(x, repeat=3)
    assert 0 <= quick.outside < 0.03
    real = exe.results
    monkeypatch.setattr(exe, "results", lambda arrays: (time.sleep(0.03), real(arrays))[1])
    slow = exe.profile(x, repeat=3)
    assert 0.03 <= slow.outside < 0.03 + slow.step_seconds + 0.05
    assert "outside the steps" in slow.table()


def test_profile_checks_its_inputs(rng):
    exe = graphc.compile(_layer(rng), backend="numba")
    with pytest.raises(graphc.GraphcError, match="float32"):
        exe.profile(rng.standard_normal((24, 32)))             # float64


def test_describe_ops():
    assert describe_ops(["input", "reshape", "matmul", "add", "add"]) == "matmul+add"
    assert describe_ops(["input", "slice", "reshape", "concat"]) == "slice+concat"
    assert describe_ops(["input", "transpose"]) == "transpose"
    assert describe_ops(["input"]) == "copy"
