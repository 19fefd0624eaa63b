"""backends/numba_cpu/vmath.py: the vectorisable float32 exp and the sigmoids every Numba
kernel shares, against float64 NumPy over float32's whole range and at its edges, with
the flags of the kernels that inline them (none; the attention softmax's reassoc and
contract), and rendered kernels compiled with fastmath=True (which keep libm)."""
import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.backends.numba_cpu.vmath import VMATH

FLAGS = {"plain": False, "reassoc": {"reassoc", "contract"}}


@pytest.fixture(scope="module", params=list(FLAGS))
def fns(request):
    import numba as nb
    ns = {}
    exec(VMATH, ns)

    def loop(f, dtype):
        @nb.njit(f"void({dtype}[::1], {dtype}[::1])", fastmath=FLAGS[request.param])
        def run(x, out):
            for i in range(x.size):
                out[i] = f(x[i])
        return lambda x: (lambda o: (run(x, o), o)[1])(np.empty_like(x))
    return {"exp32": loop(ns["_exp32"], "float32"),
            "sigmoid32": loop(ns["_sigmoid32"], "float32"),
            "sigmoid64": loop(ns["_sigmoid64"], "float64")}


def exp_cases(rng):
    return np.concatenate([rng.uniform(-110, 90, 200_000), rng.uniform(-1, 1, 10_000),
                           np.linspace(-104, -87, 1000), np.linspace(87, 89, 1000)])


def test_exp32_range_edges_and_specials(fns, rng):
    x = exp_cases(rng).astype(np.float32)
    got = fns["exp32"](x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    normal = (want > np.finfo(np.float32).tiny) & (want < np.finfo(np.float32).max)
    ulp = np.spacing(want[normal].astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got[normal] - want[normal]) / ulp) < 2.0
    sub = (want <= np.finfo(np.float32).tiny) & (want > 0)   # subnormal or underflow
    assert sub.any() and np.max(np.abs(got[sub] - want[sub])) <= 2.0 ** -149
    big = want >= np.finfo(np.float32).max
    assert big.any() and np.all(np.isinf(got[big])) and np.all(np.isfinite(got[normal]))
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    s = fns["exp32"](special)
    assert np.isnan(s[0]) and s[1] == np.inf and s[2] == 0 and s[3] == 1 and s[4] == 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_no_overflow_and_dtype(fns, dtype, rng):
    x = np.concatenate([rng.standard_normal(10_000) * 30, [-1e4, 1e4, 0.0, np.nan]])
    x = x.astype(dtype)
    got = fns["sigmoid32" if dtype == "float32" else "sigmoid64"](x)
    assert got.dtype == dtype
    with np.errstate(over="ignore", invalid="ignore"):
        want = 1 / (1 + np.exp(-x.astype(np.float64)))
    ok = want > 1e-30
    tol = 3e-7 if dtype == "float32" else 1e-15
    assert np.max(np.abs(got[ok] - want[ok]) / want[ok]) < tol
    assert got[-4] == 0 and got[-3] == 1 and got[-2] == 0.5 and np.isnan(got[-1])


@pytest.mark.parametrize("fastmath", [False, True])
def test_rendered_exp_and_silu(fastmath, rng):
    """exp and silu kernels from the renderer (vmath by default, libm under fastmath=True)
    over float32's range, against float64: within 2 ulp / 3e-7, overflow to inf."""
    g = graphc.trace(lambda x: (graphc.exp(x), graphc.silu(x)), spec(("N",)))
    exe = graphc.compile(g, backend="numba", fastmath=fastmath)
    x = exp_cases(rng).astype(np.float32)
    e, s = exe(x)
    want = np.exp(x.astype(np.float64))
    normal = (want > np.finfo(np.float32).tiny) & (want < np.finfo(np.float32).max)
    ulp = np.spacing(want[normal].astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(e[normal] - want[normal]) / ulp) < 2.0
    assert np.all(np.isinf(e[want >= np.finfo(np.float32).max]))
    with np.errstate(over="ignore"):
        want_s = x.astype(np.float64) / (1 + np.exp(-x.astype(np.float64)))
    ok = np.abs(want_s) > 1e-30
    assert np.max(np.abs(s[ok] - want_s[ok]) / np.abs(want_s[ok])) < 3e-7
