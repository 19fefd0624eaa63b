"""The CuPy backend's CUDA C: every kernel compiles with NVRTC for sm_80 and sm_90, and
runs against the float64 reference twice: under the CPU emulation harness (every run, no
GPU needed) and on a GPU through CuPy (``-m gpu``; skipped with the reason where there is
none).

One case per kernel kind (elementwise chains, broadcasting, integer division, selects,
casts, movement, embedding, reductions over one and several axes, softmax, layernorm,
rmsnorm, add+layernorm, GEMM epilogues, flash attention causal and not, S != T), at sizes
that are not multiples of the block (S = 1, 7, 45 with 64-thread emulated blocks; rows of
300 for the reductions, so a thread reduces several elements). Every case compiles one
module (one g++ and two NVRTC runs), so cases share graphs where they can.
"""
import math

import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.backends.cupy_gpu import gpu_available, nvrtc
from graphc.backends.cupy_gpu.runtime import EMULATED_BLOCK
from numba_check import check_graph, ints, nonzero, positive, randn, step_kinds

SIZES = (1, 7, 45)


@pytest.fixture(params=["emulated", pytest.param("gpu", marks=pytest.mark.gpu)])
def mode(request):
    if request.param == "gpu":
        ok, why = gpu_available()
        if not ok:
            pytest.skip(f"no GPU: {why}")
    return request.param


def compile_cupy(g, mode, level=None):
    kw = {} if level is None else {"level": level}
    return graphc.compile(g, backend="cupy", emulate=mode == "emulated", **kw)


def nvrtc_compiles(exe):
    if not nvrtc.available():
        pytest.skip("NVRTC is not installed (pip install 'graphc[gpu]')")
    for arch in nvrtc.ARCHS:
        assert ".entry" in nvrtc.compile_ptx(exe.source, arch)


def run_case(mode, fn, specs, make, level=None, sizes=SIZES):
    g = graphc.trace(fn, *specs)
    exe = compile_cupy(g, mode, level)
    check_graph(g, [make(S) for S in sizes], exe=exe)
    assert exe.launches > 0
    nvrtc_compiles(exe)       # last: without NVRTC the test skips after the run passed
    return exe


def test_block_is_smaller_than_the_sizes():
    assert EMULATED_BLOCK == 64      # 45 < 64 < 300: partial and several-per-thread blocks


# -- elementwise ------------------------------------------------------------------------

def test_elementwise_math_chain(rng, mode):
    """Every math call the renderer emits, in one O0 kernel (the ops reach the backend
    undecomposed), with broadcasting of a [4] row."""
    def fn(x, y):
        a = graphc.exp(graphc.tanh(x)) + graphc.log((y * y) + 1.0)
        b = graphc.sqrt((x * x) + 0.5) * graphc.rsqrt((y * y) + 0.5)
        c = graphc.sigmoid(x * 8.0) - graphc.silu(y) + graphc.erf(x)
        d = graphc.gelu(x) + graphc.gelu(y, approximate="tanh") + graphc.relu(-x)
        e = graphc.maximum(x, y) - graphc.minimum(x, y) + graphc.neg(graphc.scale(y, 0.3))
        return a + b + c + d + e / ((y * y) + 1.0)
    run_case(mode, fn, [spec(("S", 4)), spec((4,))],
             lambda S: (randn(rng, (S, 4), scale=3.0), randn(rng, (4,))), level="O0")


def test_integer_floor_division_and_compare(rng, mode):
    """int64 floor division and modulo-like behaviour on negative values, as NumPy."""
    def fn(a, b):
        return graphc.where(graphc.greater(a, b), a // b, graphc.neg(a))
    run_case(mode, fn, [spec(("S", 4), "int64"), spec((4,), "int64")],
             lambda S: (ints(rng, (S, 4)), nonzero(rng, (4,), "int64")))


def test_where_cast_and_mask(rng, mode):
    def fn(x, c):
        m = graphc.cast(graphc.less(c, 0.0), dtype="float32")
        s = x + graphc.causal_mask(x.shape[0], x.shape[1])
        return graphc.where(graphc.greater(c, 0.0), graphc.softmax(s, axis=-1), m)
    run_case(mode, fn, [spec(("S", "S")), spec(("S", 1))],
             lambda S: (randn(rng, (S, S)), randn(rng, (S, 1))))


def test_float64(rng, mode):
    run_case(mode, lambda x, y: graphc.exp(x) * y + graphc.tanh(y),
             [spec(("S", 3), "float64"), spec(("S", 3), "float64")],
             lambda S: (randn(rng, (S, 3), "float64"), randn(rng, (S, 3), "float64")))


def test_movement(rng, mode):
    """transpose, reshape, slice, concat feeding elementwise ops (pulled indices)."""
    def fn(x, y):
        t = x.transpose(1, 0).reshape(6, x.shape[0]) * 2.0
        return graphc.concat([t, y[:, 1:].transpose(1, 0)], axis=1)
    run_case(mode, fn, [spec(("S", 6)), spec((4, 7))],
             lambda S: (randn(rng, (S, 6)), randn(rng, (4, 7))))


def test_embedding_with_position(rng, mode):
    table = randn(rng, (50, 8))
    pos = randn(rng, (64, 8))

    def fn(ids):
        e = graphc.embedding(graphc.constant(table), ids)
        return e + graphc.constant(pos)[: ids.shape[0]]
    run_case(mode, fn, [spec(("S",), "int64")], lambda S: (rng.integers(0, 50, S),))


# -- reductions --------------------------------------------------------------------------

@pytest.mark.parametrize("op,axis,keepdims", [("sum", -1, False), ("mean", (0, 2), True),
                                              ("max", 1, False), ("sum", None, False)])
def test_reductions(op, axis, keepdims, rng, mode):
    """Rows of 300 (several elements per thread), several reduced axes, and a full
    reduction to a scalar (one block)."""
    fn = getattr(graphc, op)
    run_case(mode, lambda x: fn(x, axis=axis, keepdims=keepdims) * 1.5,
             [spec(("S", 3, 300))], lambda S: (randn(rng, (S, 3, 300)),), sizes=(1, 7))


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_softmax_long_rows(dtype, rng, mode):
    run_case(mode, lambda x: graphc.softmax(x * 3.0, axis=-1), [spec(("S", 300), dtype)],
             lambda S: (randn(rng, (S, 300), dtype),))


def test_softmax_inner_axis(rng, mode):
    run_case(mode, lambda x: graphc.softmax(x, axis=1), [spec(("S", 5, 3))],
             lambda S: (randn(rng, (S, 5, 3)),))


def test_norms(rng, mode):
    C = 300
    w, b, w2 = randn(rng, (C,)), randn(rng, (C,)), positive(rng, (C,))

    def fn(x, r):
        h = graphc.ops.add_layernorm(x, r, graphc.constant(w), graphc.constant(b), eps=1e-5)
        h = graphc.layernorm(h * 2.0, graphc.constant(w), graphc.constant(b), eps=1e-5)
        return graphc.rmsnorm(h + x, graphc.constant(w2), eps=1e-6)
    run_case(mode, fn, [spec(("S", C)), spec(("S", C))],
             lambda S: (randn(rng, (S, C)), randn(rng, (S, C))), sizes=(1, 7))


def test_reduction_with_transposed_epilogue(rng, mode):
    """An epilogue that reads the anchor at two indices: anchor to scratch, then a pull."""
    run_case(mode, lambda x: graphc.softmax(x, axis=-1)
             + graphc.softmax(x, axis=-1).transpose(1, 0),
             [spec(("S", "S"))], lambda S: (randn(rng, (S, S)),))


# -- GEMM epilogues and attention --------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_gemm_epilogue(activation, rng, mode):
    w, b = randn(rng, (12, 9)), randn(rng, (9,))
    exe = run_case(mode, lambda x, r: graphc.ops.gemm(x, graphc.constant(w),
                                                      graphc.constant(b),
                                                      activation=activation) + r,
                   [spec(("S", 12)), spec(("S", 9))],
                   lambda S: (randn(rng, (S, 12)), randn(rng, (S, 9))))
    assert "gemm" in step_kinds(exe)


H, D = 3, 16


def attention_fn(causal, dv=D):
    def fn(q, k, v):
        return graphc.ops.attention(q, k, v, scale=1 / math.sqrt(D), causal=causal)
    return fn


@pytest.mark.parametrize("causal", [False, True])
def test_flash_attention(causal, rng, mode):
    """Prefill (S == T) and decode-like (S < T) shapes crossing the 32-key tiles and the
    query tiles, one executable."""
    g = graphc.trace(attention_fn(causal), spec((H, "S", D)), spec((H, "T", D)),
                     spec((H, "T", 24)))
    exe = compile_cupy(g, mode)
    pairs = [(1, 1), (7, 7), (45, 45), (1, 33), (5, 70)] + ([] if causal else [(40, 3)])
    check_graph(g, [(randn(rng, (H, S, D)), randn(rng, (H, T, D)), randn(rng, (H, T, 24)))
                    for S, T in pairs], exe=exe)
    assert step_kinds(exe) == ["attention"]
    nvrtc_compiles(exe)


def test_flash_attention_float64_head_split(rng, mode):
    """Heads split by a reshape + transpose (strided operands, no copy) and merged back,
    float64 (double accumulators): 1e-12 against the reference."""
    def fn(x, wq):
        q = (x @ wq).reshape(x.shape[0], 2, 8).transpose(1, 0, 2)
        o = graphc.ops.attention(q, q, q, scale=0.25, causal=True)
        return o.transpose(1, 0, 2).reshape(x.shape[0], 16)
    g = graphc.trace(fn, spec(("S", 16), "float64"), spec((16, 16), "float64"))
    exe = compile_cupy(g, mode)
    check_graph(g, [(randn(rng, (S, 16), "float64"), randn(rng, (16, 16), "float64"))
                    for S in (1, 40)], exe=exe)
    assert "attention" in step_kinds(exe)
    nvrtc_compiles(exe)


# -- models, options, errors ---------------------------------------------------------------

@pytest.mark.parametrize("causal", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_textbook_transformer(causal, rng, mode):
    """The seed's model (2 layers, embedding + positions, attention, FFN, layernorms,
    softmax head) end to end: every kernel compiles with NVRTC and the outputs match."""
    from graphc.models import transformer
    cfg = transformer.TransformerConfig(vocab_size=97, d_model=32, n_heads=4, d_ff=64,
                                        n_layers=2, causal=causal)
    g = transformer.random(cfg, seed=int(rng.integers(1 << 30))).trace("S")
    exe = compile_cupy(g, mode)
    check_graph(g, [(rng.integers(0, 97, S),) for S in (1, 9, 40)], exe=exe)
    assert step_kinds(exe).count("attention") == 2
    nvrtc_compiles(exe)


def test_library_op_falls_back_with_a_warning(rng, mode):
    """An opaque op with no CUDA kernel (a user's) runs its NumPy reference, and compile
    says so at the user's line."""
    from graphc.backends.cupy_gpu import LibraryFallbackWarning
    from graphc.ops import unregister_op

    @graphc.register_op("my_host_only_xyz", kind="opaque", infer=lambda t, a: t[0])
    def host_only(x):
        return np.cumprod(x, axis=0)
    try:
        g = graphc.trace(lambda x: host_only(graphc.tanh(x) * 2.0) + 1.0, spec(("S", 6)))
        with pytest.warns(LibraryFallbackWarning, match="my_host_only_xyz") as caught:
            exe = compile_cupy(g, mode)
        assert caught[0].filename == __file__            # the user's line, not graphc's
        check_graph(g, [(randn(rng, (S, 6)),) for S in (2, 7)], exe=exe)
    finally:
        unregister_op("my_host_only_xyz")


def test_without_a_gpu_compile_says_how_to_emulate():
    ok, why = gpu_available()
    if ok:
        pytest.skip("this machine has a GPU")
    g = graphc.trace(lambda x: graphc.exp(x), spec(("S", 4)))
    with pytest.raises(graphc.GraphcError, match="emulate=True"):
        graphc.compile(g, backend="cupy")


def test_nvrtc_error_names_the_line():
    if not nvrtc.available():
        pytest.skip("NVRTC is not installed (pip install 'graphc[gpu]')")
    src = 'extern "C" __global__ void k(float* x) {\n  x[0] = undefined_name;\n}\n'
    with pytest.raises(graphc.GraphcError) as e:
        nvrtc.compile_ptx(src, "sm_80")
    text = str(e.value)
    assert "undefined_name" in text and "2 |   x[0] = undefined_name;" in text


def test_unknown_option():
    g = graphc.trace(lambda x: graphc.exp(x), spec(("S", 4)))
    with pytest.raises(graphc.GraphcError, match="unknown options"):
        graphc.compile(g, backend="cupy", emulate=True, fastmath=True)


@pytest.mark.gpu
def test_device_arrays_stay_on_the_gpu(rng):
    ok, why = gpu_available()
    if not ok:
        pytest.skip(f"no GPU: {why}")
    import cupy
    g = graphc.trace(lambda x: graphc.softmax(x * 2.0, axis=-1), spec(("S", 33)))
    exe = graphc.compile(g, backend="cupy", device_outputs=True)
    x = randn(rng, (5, 33))
    y = exe(cupy.asarray(x))
    assert isinstance(y, cupy.ndarray)
    want = graphc.compile(g, backend="reference", float64=True)(x)
    assert np.linalg.norm(y.get() - want) / np.linalg.norm(want) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("script,args", [
    ("attention.py", ["--seq", "300", "--heads", "2", "--repeat", "2"]),
    ("transformer_layer.py", ["--seq", "128", "--peers", "graphc-cupy,numpy", "--repeat",
                              "2"]),
])
def test_gpu_benchmarks_run(script, args):
    """The GPU benchmarks run end to end at small sizes and report no failure."""
    import subprocess
    import sys
    from pathlib import Path
    ok, why = gpu_available()
    if not ok:
        pytest.skip(f"no GPU: {why}")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / script
    r = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "failed" not in r.stdout, r.stdout
    assert "graphc-cupy" in r.stdout


@pytest.mark.slow       # compiles DeepSeek-V2 tiny's forward and decode for the emulation
def test_deepseek_v2_tiny_on_the_emulated_gpu(rng):
    """DeepSeek-V2 (MLA, MoE, YaRN rope) through backend="cupy-emu": prefill logits and
    absorbed-cache greedy decoding match the float64 reference; rope, topk and moe run
    their CUDA kernels (no fallback warning), and the module compiles with NVRTC."""
    import warnings
    from graphc.backends.cupy_gpu import LibraryFallbackWarning
    from graphc.models import deepseek_v2 as dv
    model = dv.random(dv.preset("tiny"), seed=int(rng.integers(1 << 30)))
    ids = rng.integers(0, model.config.vocab_size, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LibraryFallbackWarning)
        out = model.forward(ids, backend="cupy-emu")
        got = model.generate(ids[:4], 4, backend="cupy-emu")
    want = model.forward(ids, backend="reference", float64=True)
    assert np.linalg.norm(out - want) / np.linalg.norm(want) < 1e-5
    np.testing.assert_array_equal(got, model.generate(ids[:4], 4, backend="reference",
                                                      float64=True))
    for which in ("forward", "decode"):
        exe = model.compiled(which, "cupy-emu")
        steps = [s for s in exe.program.steps if type(s).__name__ == "LibraryStep"]
        assert {s.body.nodes[s.body.outputs[0]].op for s in steps} == {"rope", "topk", "moe"}
        assert all(s.node in exe.library for s in steps)
    nvrtc_compiles(model.compiled("forward", "cupy-emu"))


def test_flash_tile_fits_shared_memory():
    """Query rows per block shrink for large head dims (DeepSeek-V2's 192/128 fits at
    16 rows in 48 KiB of shared memory); dims that cannot fit are an error, not a kernel
    that fails to launch."""
    from graphc.backends.cupy_gpu import templates
    assert templates.flash_plan("float32", 64, 64) == 32
    assert templates.flash_plan("float32", 192, 128) == 16
    with pytest.raises(graphc.GraphcError, match="shared memory"):
        templates.flash_plan("float64", 1024, 1024)
    with pytest.raises(graphc.GraphcError, match="float16"):
        templates.flash_plan("float16", 64, 64)
    if nvrtc.available():   # the DeepSeek-V2 head dims' kernel builds
        from graphc.backends.cupy_gpu import render
        src = render.module_source([templates.flash_attention("float32", 192, 128)])
        for arch in nvrtc.ARCHS:
            assert ".entry graphc_flash_float32_192_128" in nvrtc.compile_ptx(src, arch)
