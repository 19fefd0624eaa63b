"""The loop IR's whole vocabulary on both renderers: every binary operator and math
function (loopir.BIN_OPS, loopir.FUNCTIONS) is in each renderer's table, and a kernel
that uses all of them gives NumPy's values on Numba and under the CUDA emulation (and
compiles with NVRTC), for float32, float64, int64 and bool operands. An op's ``lower=``
may use any of them; this is where a renderer's rendering of one is checked, before any
op relies on it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from arrays import rel_err
from graphc.backends.cupy_gpu import nvrtc
from graphc.backends.cupy_gpu import render as cuda_render
from graphc.backends.cupy_gpu.emulate import EmulatedModule
from graphc.backends.numba_cpu import render as numba_render
from graphc.backends.numba_cpu.cache import load_kernel
from graphc.lower import loopir as L
from graphc.lower.renderer import missing_ops

N = 37      # elements: more than one warp, not a multiple of 32
np_erf = np.vectorize(math.erf)


def test_every_renderer_implements_the_whole_loop_ir():
    assert missing_ops(numba_render.CODE_FOR_OP) == []
    assert missing_ops(cuda_render.CODE_FOR_OP) == []


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


# name -> (loop-IR expression of a = in0[i], b = in1[i], NumPy of the float64 inputs).
# Domains are kept inside each function's (log of |a| + 0.5, pow of a positive base).
def _float_cases(dt):
    a, b = L.Load("in0", (L.Var("i"),)), L.Load("in1", (L.Var("i"),))
    pos = L.binary("+", L.call("abs", a), L.Const(0.5, dt))
    f = {name: (L.call(name, a), lambda x, y, g=np_fn: g(x)) for name, np_fn in {
        "exp": np.exp, "tanh": np.tanh, "sigmoid": _sigmoid, "sin": np.sin, "cos": np.cos,
        "floor": np.floor, "ceil": np.ceil, "expm1": np.expm1, "neg": np.negative,
        "abs": np.abs, "sign": np.sign, "erf": np_erf, "gelu_tanh": _gelu_tanh,
        "gelu": lambda x: 0.5 * x * (1 + np_erf(x / np.sqrt(2)))}.items()}
    for name, np_fn in {"log": np.log, "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x),
                        "log1p": np.log1p}.items():
        f[name] = (L.call(name, pos), lambda x, y, g=np_fn: g(np.abs(x) + 0.5))
    for op, np_fn in {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
                      "max": np.maximum, "min": np.minimum, "%": np.mod,
                      "//": np.floor_divide}.items():
        f[op] = (L.binary(op, a, b), np_fn)
    f["pow"] = (L.binary("pow", pos, b), lambda x, y: np.power(np.abs(x) + 0.5, y))
    for op, np_fn in {"<": np.less, ">": np.greater, "<=": np.less_equal,
                      ">=": np.greater_equal, "==": np.equal, "!=": np.not_equal}.items():
        # a compared with itself rounded, so == and != see equal values too
        f[op] = (L.Cast(L.binary(op, a, L.call("floor", b)), dt),
                 lambda x, y, g=np_fn: g(x, np.floor(y)).astype(np.float64))
    za, zb = L.binary(">", a, L.Const(0.0, dt)), L.binary(">", b, L.Const(0.0, dt))
    for op, np_fn in {"and": np.logical_and, "or": np.logical_or,
                      "xor": np.logical_xor}.items():
        f[op] = (L.Cast(L.binary(op, za, zb), dt),
                 lambda x, y, g=np_fn: g(x > 0, y > 0).astype(np.float64))
    f["not"] = (L.Cast(L.call("not", za), dt), lambda x, y: (~(x > 0)).astype(np.float64))
    inf = L.binary("/", a, L.binary("-", b, b))      # a / 0: +-inf
    f["isinf"] = (L.Cast(L.call("isinf", inf), dt), lambda x, y: np.ones_like(x))
    f["isnan"] = (L.Cast(L.call("isnan", L.binary("/", L.binary("-", b, b),
                                                  L.binary("-", b, b))), dt),
                  lambda x, y: np.ones_like(x))
    return f


def _int_cases():
    a, b = L.Load("in0", (L.Var("i"),)), L.Load("in1", (L.Var("i"),))
    small = L.binary("%", L.call("abs", b), L.Const(4, "int64"))
    f = {op: (L.binary(op, a, b), g) for op, g in {
        "+": np.add, "-": np.subtract, "*": np.multiply, "//": np.floor_divide,
        "%": np.mod, "max": np.maximum, "min": np.minimum}.items()}
    f["pow"] = (L.binary("pow", a, small), lambda x, y: np.power(x, np.abs(y) % 4))
    for op, g in {"<": np.less, ">=": np.greater_equal, "==": np.equal,
                  "!=": np.not_equal}.items():
        f[op] = (L.Cast(L.binary(op, a, b), "int64"), lambda x, y, g=g: g(x, y).astype(np.int64))
    f["neg"] = (L.call("neg", a), lambda x, y: -x)
    f["abs"] = (L.call("abs", a), lambda x, y: np.abs(x))
    f["sign"] = (L.call("sign", a), lambda x, y: np.sign(x))
    return f


def _kernel(cases, dt):
    names = sorted(cases)
    body = [L.Store(f"out{k}", (L.Var("i"),), L.Cast(cases[n][0], dt))
            for k, n in enumerate(names)]
    bufs = [L.BufferParam("in0", dt, 1), L.BufferParam("in1", dt, 1)] + [
        L.BufferParam(f"out{k}", dt, 1, "out") for k in range(len(names))]
    return names, L.Kernel(f"k_vocab_{dt}", bufs, ["n"],
                           [L.Loop("i", L.Var("n"), body, parallel=True)])


def _inputs(dt, rng):
    if dt == "int64":
        a = rng.integers(-9, 10, N)
        b = rng.integers(-9, 10, N)
        return a, np.where(b == 0, 3, b)
    a = rng.standard_normal(N) * 2
    b = rng.standard_normal(N) * 2
    return a.astype(dt), np.where(np.abs(b) < 0.1, 0.7, b).astype(dt)


def _run_numba(kernel, a, b, n_out):
    fn, _ = load_kernel(numba_render.render_kernel(kernel))
    outs = [np.empty(N, a.dtype) for _ in range(n_out)]
    sizes = [np.int64(N)] * len(numba_render.function_sizes(kernel))
    fn(a, b, *outs, *sizes, *((0, N) if numba_render.split_loop(kernel) else ()))
    return outs


def _run_cuda(kernel, a, b, n_out):
    ck = cuda_render.render_kernel(kernel)
    src = cuda_render.module_source([ck])
    if nvrtc.available():
        nvrtc.compile_ptx(src, "sm_80")
    fn = EmulatedModule(src).get_function(ck.name)
    outs = [np.empty(N, a.dtype) for _ in range(n_out)]
    fn((2,), (32,), (a, b, *outs, np.int64(N)))
    return outs


# numba's float64 and int64 runs (a few seconds of compiles each) are in the slow run
@pytest.mark.parametrize("run,dt", [
    pytest.param(run, dt, id=f"{name}-{dt}",
                 marks=[pytest.mark.slow] if name == "numba" and dt != "float32" else [])
    for name, run in (("numba", _run_numba), ("cuda-emu", _run_cuda))
    for dt in ("float32", "float64", "int64")])
def test_vocabulary_matches_numpy(dt, run, rng):
    cases = _int_cases() if dt == "int64" else _float_cases(dt)
    names, kernel = _kernel(cases, dt)
    a, b = _inputs(dt, rng)
    outs = run(kernel, a, b, len(names))
    wide = (a.astype(np.float64), b.astype(np.float64)) if dt != "int64" else (a, b)
    bad = []
    for name, got in zip(names, outs):
        want = cases[name][1](*wide)
        if dt == "int64":
            ok = np.array_equal(got, want.astype(np.int64))
        else:
            finite = np.isfinite(want)
            ok = (np.array_equal(np.isfinite(got), finite)
                  and rel_err(got[finite], want[finite]) < (2e-6 if dt == "float32" else 1e-13))
        if not ok:
            bad.append(f"{name}: got {got[:6]} want {want[:6]}")
    assert not bad, "\n".join(bad)
