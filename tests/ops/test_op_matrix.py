"""The op matrix: every registered op on every backend (reference, numba, cupy-emu)
against the float64 reference, from one table of samples (tests/ops/op_samples/).

The samples of a family are traced into one graph (so each backend compiles a family
once, not once per sample) and run at every symbol binding; each sample's outputs are
then checked in a test of their own, so a failure names the op, the sample and the
backend. The quick suite runs every sample on the reference interpreter and the first
sample of every op on numba and cupy-emu (a graph of those per family); the other samples
on the compiling backends (a second graph per family, the compiles that dominate this
file) run with -m slow. A compiled backend that runs an op as its NumPy reference (a
LibraryFallbackWarning) fails too: every built-in op has a loop-IR lowering or a native
kernel on every backend.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphc
from graphc.errors import LibraryFallbackWarning
from op_samples import all_samples, draw
from opcheck import assert_matches

SAMPLES = all_samples()
BACKENDS = ("reference", "numba", "cupy-emu")
FIRST_OF_OP = {}                 # op -> id of its first sample (the quick one)
for _s in SAMPLES:
    FIRST_OF_OP.setdefault(_s.op, _s.id)


def _part(sample, backend) -> str:
    """Which graph of its family a sample is compiled in on ``backend``."""
    return "all" if backend == "reference" else \
        "first" if FIRST_OF_OP[sample.op] == sample.id else "rest"


def _cases():
    return [pytest.param(s, b, id=f"{s.id}-{b}",
                         marks=[pytest.mark.slow] if _part(s, b) == "rest" else [])
            for s in SAMPLES for b in BACKENDS]
NOT_USER_OPS = {"fused"}      # a fusion group's container, made by the fuse pass


def _family_graph(samples):
    """One graph computing every sample of ``samples``, each on inputs of its own, and
    the outputs that belong to each sample (ranges of the graph's outputs)."""
    specs, spans = [], []
    for s in samples:
        spans.append((len(specs), len(specs) + len(s.inputs)))
        specs += [graphc.spec(i.shape, i.dtype) for i in s.inputs]
    outputs = []

    def fn(*xs):
        outs = []
        for s, (a, b) in zip(samples, spans):
            r = s.fn(*xs[a:b])
            r = list(r) if isinstance(r, (tuple, list)) else [r]
            outputs.append((len(outs), len(outs) + len(r)))
            outs += r
        return tuple(outs)
    return graphc.trace(fn, *specs), outputs


@pytest.fixture(scope="module")
def run_family():
    """``run_family(backend, family, part)`` -> (graph, {sample id: [(outputs, float64
    reference outputs, binding)]}), computed once per backend, family and part."""
    cache: dict = {}

    def get(backend, family, part):
        if (backend, family, part) not in cache:
            samples = [s for s in SAMPLES
                       if s.family == family and _part(s, backend) == part]
            g, outputs = _family_graph(samples)
            rng = np.random.default_rng()
            oracle = graphc.compile(g, backend="reference", float64=True)
            with warnings.catch_warnings():
                warnings.simplefilter("error", LibraryFallbackWarning)
                exe = graphc.compile(g, backend=backend)
            per = {s.id: [] for s in samples}
            for env in samples[0].bindings:
                arrays = [draw(rng, i, env) for s in samples for i in s.inputs]
                got, want = exe(*arrays), oracle(*arrays)
                for s, (a, b) in zip(samples, outputs):
                    per[s.id].append((got[a:b], want[a:b], [g.output_types[k] for k in
                                                            range(a, b)], env))
            cache[backend, family, part] = (g, per)
        return cache[backend, family, part]
    return get


def test_sample_ids_are_unique():
    ids = [s.id for s in SAMPLES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("sample,backend", _cases())
def test_op(sample, backend, run_family):
    g, per = run_family(backend, sample.family, _part(sample, backend))
    assert sample.op in g.op_counts(), f"{sample.op} is not in the traced sample"
    for got, want, types, env in per[sample.id]:
        for k, (o, w, t) in enumerate(zip(got, want, types)):
            tol = sample.tol if t.dtype == "float32" else None
            try:
                assert_matches(o, w, t.np_dtype, tol=tol)
            except AssertionError as e:
                raise AssertionError(f"{sample.id} output {k} at {env} on {backend}: "
                                     f"{e}") from None


def test_every_op_has_a_sample():
    """A new op without a sample fails here (add it to tests/ops/op_samples/)."""
    covered = {s.op for s in SAMPLES}
    missing = sorted(n for n in graphc.all_ops()
                     if n not in covered and n not in NOT_USER_OPS and not n.endswith("_xyz"))
    assert not missing, f"ops with no op-matrix sample: {missing}"
