"""moe on the reference backend against a NumPy computation written here: every expert on
every token, combined with a dense [N, E] gate matrix (the op itself only runs the experts
each token was routed to); grouped_matmul's offsets checked on every backend."""
import numpy as np
import pytest

import graphc
from graphc import spec
from opcheck import FLOATS, assert_reported_at, check, next_line, randn


def _dense_moe(x, w, idx, gate_up, down):
    E, I = gate_up.shape[0], down.shape[2]
    gates = np.zeros((x.shape[0], E))
    for n in range(x.shape[0]):
        for k in range(idx.shape[1]):
            gates[n, idx[n, k]] += w[n, k]
    out = np.zeros(x.shape, np.float64)
    for e in range(E):
        g = x @ gate_up[e, :I].T
        u = x @ gate_up[e, I:].T
        y = (g / (1 + np.exp(-g)) * u) @ down[e].T
        out += gates[:, e:e + 1] * y
    return out


def _routing(rng, n, E, K, dtype):
    idx = np.stack([rng.permutation(E)[:K] for _ in range(n)]).astype(np.int64)
    return randn(rng, (n, K), dtype), idx


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("H,E,I,K", [(8, 4, 6, 2), (16, 8, 5, 3), (4, 3, 2, 1), (6, 5, 4, 5)])
def test_moe_matches_dense_mixture(H, E, I, K, dtype, rng):
    gate_up = randn(rng, (E, 2 * I, H), dtype, 0.5)
    down = randn(rng, (E, H, I), dtype, 0.5)
    cases = []
    for n in (1, 7, 20):
        w, idx = _routing(rng, n, E, K, dtype)
        cases.append((randn(rng, (n, H), dtype), w, idx))
    check(lambda x, w, i: graphc.moe(x, w, i, gate_up, down),
          [spec(("N", H), dtype), spec(("N", K), dtype), spec(("N", K), "int64")], cases,
          lambda x, w, i: _dense_moe(x, w, i, gate_up.astype(np.float64),
                                     down.astype(np.float64)))


def test_moe_runs_only_routed_experts(rng):
    """An expert no token is routed to never runs: NaN weights there leave no trace."""
    H, E, I = 8, 6, 4
    gate_up = randn(rng, (E, 2 * I, H), "float64")
    down = randn(rng, (E, H, I), "float64")
    gate_up[3] = np.nan
    down[3] = np.nan
    x = randn(rng, (9, H), "float64")
    idx = rng.choice([0, 1, 2, 4, 5], size=(9, 2), replace=True)
    idx[:, 1] = (idx[:, 0] + 1) % 6
    idx[idx == 3] = 4
    w = randn(rng, (9, 2), "float64")
    out = graphc.moe(x, w, idx, gate_up, down)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, _dense_moe(x, w, idx, np.nan_to_num(gate_up),
                                               np.nan_to_num(down)), rtol=1e-12, atol=1e-12)


def test_moe_errors():
    gu, dn = np.ones((4, 6, 8), np.float32), np.ones((4, 8, 3), np.float32)
    ok = [spec(("N", 8)), spec(("N", 2)), spec(("N", 2), "int64")]
    with pytest.raises(graphc.ShapeError, match="down") as e:
        at = next_line()
        graphc.trace(lambda x, w, i: graphc.moe(x, w, i, gu, np.ones((4, 8, 4), np.float32)), *ok)  # noqa: E501
    assert_reported_at(e.value, at, "moe")
    with pytest.raises(graphc.ShapeError, match="gate_up"):
        graphc.trace(lambda x, w, i: graphc.moe(x, w, i, np.ones((4, 6, 7), np.float32), dn), *ok)  # noqa: E501
    with pytest.raises(graphc.ShapeError, match="indices"):
        graphc.trace(lambda x, w, i: graphc.moe(x, w, i, gu, dn),
                     spec(("N", 8)), spec(("N", 2)), spec(("N", 3), "int64"))
    with pytest.raises(graphc.DTypeError, match="indices"):
        graphc.trace(lambda x, w, i: graphc.moe(x, w, i, gu, dn),
                     spec(("N", 8)), spec(("N", 2)), spec(("N", 2), "float32"))
    exe = graphc.compile(graphc.trace(lambda x, w, i: graphc.moe(x, w, i, gu, dn), *ok))
    with pytest.raises(graphc.InputError, match="expert index 4 is out of range for 4"):
        exe(np.ones((2, 8), np.float32), np.ones((2, 2), np.float32), np.array([[0, 4], [1, 2]]))


def test_grouped_matmul_offsets_checked_at_call(rng):
    """Offsets that decrease or pass the rows are an InputError, not a wrong answer."""
    def fn(x, w, offs):
        return graphc.grouped_matmul(x, w, offs)
    g = graphc.trace(fn, graphc.spec((5, 3)), graphc.spec((2, 3, 4)),
                     graphc.spec((2,), "int64"))
    x = rng.standard_normal((5, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3, 4)).astype(np.float32)
    for backend in ("reference", "numba", "cupy-emu"):
        exe = graphc.compile(g, backend=backend)
        for bad in ([3, 1], [2, 6], [-1, 2]):
            with pytest.raises(graphc.InputError, match="offsets"):
                exe(x, w, np.array(bad, np.int64))
        got = exe(x, w, np.array([2, 4], np.int64))
        want = np.concatenate([x[:2] @ w[0], x[2:4] @ w[1], np.zeros((1, 4), np.float32)])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
