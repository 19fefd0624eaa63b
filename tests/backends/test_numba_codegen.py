"""Code generation choices of the Numba backend that its speed depends on: kernels
compiled with Numba's ``noalias`` flag (array arguments that do not overlap, as Numba's
own parfor lowering marks them: without it a loop with a remapped store, or one whose
output is an operand's buffer, is left scalar), and float32 tanh-GELU written as
x * sigmoid(2u), which vectorises (libm's tanh does not)."""
import math

import numpy as np

import graphc
from graphc import spec
from numba_check import kernel_sources, randn


def test_kernels_are_compiled_with_noalias(rng):
    exe = graphc.compile(graphc.trace(lambda x: graphc.exp(x).transpose(1, 0),
                                      spec(("S", 8))), backend="numba")
    assert "**_NOALIAS)" in kernel_sources(exe)
    fn = next(iter(exe.functions.values()))
    assert fn.targetoptions.get("noalias") is True
    x = randn(rng, (37, 8))
    np.testing.assert_allclose(exe(x), np.exp(x.astype(np.float64)).T, rtol=1e-6)


def test_float32_gelu_tanh_as_a_sigmoid(rng):
    """Against float64 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3): random
    values, large ones of both signs (the float32 tanh form's 1 + tanh(u) cancels to 0
    there; the sigmoid form keeps the tiny true value), infinities and NaN."""
    from graphc.backends.numba_cpu.cache import load_kernel
    from graphc.backends.numba_cpu.render import render_kernel
    from graphc.lower import loopir as L
    k = L.Kernel("k_gelu_tanh_test", [L.BufferParam("in0", "float32", 1),
                                      L.BufferParam("out", "float32", 1, "out")], ["n"],
                 [L.Loop("i", L.Var("n"), [L.Store("out", (L.Var("i"),), L.call(
                     "gelu_tanh", L.Load("in0", (L.Var("i"),))))], parallel=True)])
    src = render_kernel(k)
    body = src.split("def kernel(")[-1]
    assert "_sigmoid32(" in body and "tanh" not in body, body
    fn, _ = load_kernel(src)

    def run(x):
        out = np.empty_like(x)
        fn(x, out, 0, x.size)            # (n bounds the split loop alone: not passed)
        return out
    x = np.concatenate([randn(rng, (1000,)) * 3, np.linspace(-12, 12, 97, dtype=np.float32),
                        np.array([0.0, -0.0, 1e-30, -1e-30, np.inf, -np.inf, np.nan],
                                 np.float32)])
    got = run(x).astype(np.float64)
    xd = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        want = 0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd ** 3)))
    fin = np.isfinite(want)
    assert np.linalg.norm(got[fin] - want[fin]) / np.linalg.norm(want[fin]) < 1e-6
    assert np.abs(got[fin] - want[fin]).max() < 1e-5
    assert got[-3] == np.inf and np.isnan(got[-2]) and np.isnan(got[-1])   # -inf * 0: NaN
    assert np.isnan(want[-2])


def test_float32_tanh_vectorisable_and_accurate(rng):
    """vmath's _tanh32 (the polynomial below |x| = 0.55, 1 - 2/(exp(2|x|)+1) above):
    within a few float32 ulps of float64 tanh over the range, at the switch, for tiny
    and huge values; tanh(+-inf) = +-1, -0 stays -0, NaN stays NaN."""
    exe = graphc.compile(graphc.trace(lambda x: graphc.tanh(x), spec(("S",))),
                         backend="numba")
    assert "_tanh32(" in kernel_sources(exe)
    x = np.concatenate([randn(rng, (20000,)) * 3, np.linspace(-20, 20, 40001, dtype=np.float32),
                        randn(rng, (2000,)) * 1e-3,
                        np.array([0.55, -0.55, np.nextafter(np.float32(0.55), 0), 1e-30,
                                  -1e-30, 50, -50], np.float32)])
    got = exe(x).astype(np.float64)
    want = np.tanh(x.astype(np.float64))
    nz = want != 0
    assert (np.abs(got[nz] - want[nz]) / np.abs(want[nz])).max() < 4e-7
    special = exe(np.array([np.inf, -np.inf, -0.0, np.nan], np.float32))
    assert special[0] == 1 and special[1] == -1 and np.signbit(special[2])
    assert special[2] == 0 and np.isnan(special[3])


def test_few_rows_against_a_weight_take_the_rows_kernels(rng, monkeypatch):
    """x @ W.T with one row runs rows_shared_t, 2 to FEW_ROWS rows (a batched decode
    step) tiled_t, more rows BLAS, in a graph whose row count is symbolic (the modules
    loaded at the first call that takes them); odd sizes (K 37, N 53) against float64
    either way."""
    from graphc.backends.numba_cpu import runtime
    w = randn(rng, (53, 37))
    exe = graphc.compile(graphc.trace(lambda x: x @ graphc.constant(w, name="W").T,
                                      spec(("M", 37))), backend="numba")
    assert not exe.rows and not exe.tiles      # symbolic rows: no module compiled with it
    exe(randn(rng, (2, 37)))
    assert "float32" in exe.tiles and not exe.rows      # loaded at the first few-row call
    calls = []
    real = exe.few_rows_module

    def spy(kind, dt):
        mod = real(kind, dt)

        class Spy:
            def __getattr__(self, name):
                fn = getattr(mod, name)
                return lambda *args: (calls.append((name, args[0].shape[0])), fn(*args))[1]
        return Spy()
    monkeypatch.setattr(exe, "few_rows_module", spy)
    for m in (1, 2, 3, 4, 5, 6, 7, 8, 9, 20):
        x = randn(rng, (m, 37))
        got = exe(x)
        want = x.astype(np.float64) @ w.astype(np.float64).T
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-6, m
    assert calls == [("rows_shared_t", 1)] + [("tiled_t", m) for m in range(2, 9)]
    assert runtime.FEW_ROWS == 8
