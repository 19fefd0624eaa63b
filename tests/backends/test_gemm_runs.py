"""Sibling GEMMs (program.gemm_runs: q, k and v projections of one input; SwiGLU's gate
and up) run at once over the numba backend's threads, one GEMM per thread, their
epilogues after (NumbaExecutable.gemm_run): the same results as the float64 reference,
an epilogue reading a sibling's product included; GEMMs in a chain, few-row GEMMs,
unbalanced loads and products whose memory overlaps another's operands run one by one."""
import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.backends.numba_cpu import runtime, threads
from graphc.lower.program import GemmStep
from graphc.runtime.program import gemm_runs
from numba_check import check_graph, randn

K = 128


def block(rng):
    """q, k, v of one input (q with a bias epilogue), then SwiGLU (up's epilogue reads
    gate's product) and a GEMM that reads their output (a chain: not a sibling)."""
    ws = [(randn(rng, (K, n)) / np.sqrt(K)).astype(np.float32) for n in (K, 64, 64, 192, 192)]
    bq = randn(rng, (K,)).astype(np.float32)
    wd = (randn(rng, (192, K)) / np.sqrt(192)).astype(np.float32)

    def fn(x):
        wq, wk, wv, wg, wu = (graphc.constant(w, name=f"W{i}") for i, w in enumerate(ws))
        q, k, v = x @ wq + graphc.constant(bq, name="bq"), x @ wk, x @ wv
        h = graphc.silu(x @ wg) * (x @ wu)
        return q, k, v, h @ graphc.constant(wd, name="Wd")
    return fn


def runs_used(exe):
    sz = next(iter(exe._sized.values()))
    return {k[1]: v for k, v in sz.memo.items() if k[0] == "gemm run"}


def test_sibling_gemms_are_found_and_run_at_once(rng, monkeypatch):
    monkeypatch.setattr(threads, "workers", lambda: 2)
    g = graphc.trace(block(rng), spec(("S", K)))
    exe = check_graph(g, [(randn(rng, (S, K)),) for S in (64, 300)])
    steps = exe.program.steps
    runs = gemm_runs(steps)
    members = [[steps[i].node for i in range(a, b)] for a, b in runs.items()]
    assert all(isinstance(steps[i], GemmStep) for a, b in runs.items() for i in range(a, b))
    # all five read x (q, k, v, gate, up): one run (up's epilogue reads gate's product)
    assert [len(m) for m in members] == [5], members
    # the down projection reads SwiGLU's output: in no run
    down = [s for s in steps if isinstance(s, GemmStep)][-1]
    assert all(down.node not in m for m in members)
    used = runs_used(exe)
    assert len(used) == 1, used
    plan = next(iter(used.values()))
    # columns 128, 64, 64, 192, 192 dealt largest first: 192 + 128 and 192 + 64 + 64
    start = next(iter(runs))
    cols = [int(steps[start + i].acc_shape[-1]) for i in range(5)]
    assert sorted(cols) == [64, 64, 128, 192, 192]
    assert sorted(i for p in plan for i in p) == list(range(5))
    assert [sum(cols[i] for i in p) for p in plan] == [320, 320], (plan, cols)


def test_one_thread_or_few_rows_run_one_by_one(rng, monkeypatch):
    g = graphc.trace(block(rng), spec(("S", K)))
    monkeypatch.setattr(threads, "workers", lambda: 1)
    exe = check_graph(g, [(randn(rng, (64, K)),)])
    assert runs_used(exe) == {}                       # no plan made on one thread
    monkeypatch.setattr(threads, "workers", lambda: 2)
    exe = check_graph(g, [(randn(rng, (runtime.FEW_ROWS, K)),)])
    assert all(plan == () for plan in runs_used(exe).values())


def test_plan_refuses_overlap_and_imbalance():
    a = np.ones((64, K), np.float32)
    b1, b2 = np.ones((K, 256), np.float32), np.ones((K, 256), np.float32)
    o1, o2 = np.empty((64, 256), np.float32), np.empty((64, 256), np.float32)
    ok = runtime._gemm_run_plan([(o1, [a, b1], a, b1, o1), (o2, [a, b2], a, b2, o2)], 2)
    assert sorted(ok) == [[0], [1]]
    # the second product written where the first reads its weight
    alias = b1[:64, :256]
    bad = runtime._gemm_run_plan([(o1, [a, b1], a, b1, o1), (alias, [a, b2], a, b2, alias)],
                                 2)
    assert bad == ()
    # one GEMM with 8x the other's work: the threads' loads do not balance
    big = np.ones((K, 2048), np.float32)
    ob = np.empty((64, 2048), np.float32)
    assert runtime._gemm_run_plan([(ob, [a, big], a, big, ob), (o2, [a, b2], a, b2, o2)],
                                  2) == ()


@pytest.mark.parametrize("S", [64, 257])
def test_results_do_not_depend_on_the_threads(rng, monkeypatch, S):
    """The same graph on one and two threads: equal to float32 rounding."""
    g = graphc.trace(block(rng), spec(("S", K)))
    x = randn(rng, (S, K))
    outs = []
    for n in (1, 2):
        monkeypatch.setattr(threads, "workers", lambda n=n: n)
        outs.append(graphc.compile(g, backend="numba")(x))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
