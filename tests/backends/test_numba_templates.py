"""The Numba backend's templates: blockwise attention (query blocks of 128 rows) and GEMM
with a fused epilogue, at sizes that are not multiples of anything (S = 1, 7, 130, 257),
causal and not, several heads, and S != T (decode: fewer queries than keys)."""
import math

import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.backends.numba_cpu.runtime import ATTENTION_BLOCK
from numba_check import check_fn, check_graph, randn, step_kinds

D = 8          # head dim
H = 3          # heads


def attention_rule(causal, dtype="float32"):
    """softmax(scale(q @ k^T) [+ causal_mask]) @ v, written out: the rule makes it one
    attention op."""
    def fn(q, k, v):
        s = graphc.scale(q @ k.transpose(0, 2, 1), 1 / math.sqrt(D))
        if causal:
            s = s + graphc.causal_mask(q.shape[1], k.shape[1], dtype=dtype)
        return graphc.softmax(s, axis=-1) @ v
    return fn


def qkv(rng, S, T, dtype="float32", dv=D):
    return (randn(rng, (H, S, D), dtype), randn(rng, (H, T, D), dtype),
            randn(rng, (H, T, dv), dtype))


def softmax_kernel(mod, fn, masked=False):
    """The score softmax as the runtime calls it, on a row-major block s [B, R, T] (the
    test's view; the kernel's block is key-major [B, T, R]: a transposed copy in, the
    result transposed back into s): on the calling thread ("one"), or "split": its rows
    split over the backend's threads (runtime.split_softmax)."""
    from functools import partial
    from graphc.backends.numba_cpu.runtime import split_softmax
    kernel = mod.softmax if fn == "one" else partial(split_softmax, mod.softmax, masked)

    def run(s, inv, scale, causal, row0, diag, *mask):
        t = np.ascontiguousarray(np.swapaxes(s, 1, 2))
        if mask:   # [M1, M2, R, T] -> its distinct blocks key-major, M2 (as the runtime)
            from graphc.backends.numba_cpu.runtime import _key_major
            mask = (*_key_major(mask[0], mod.key_major), mask[1])
        kernel(t, inv, scale, causal, row0, diag, *mask, 0, s.shape[1])
        s[...] = np.swapaxes(t, 1, 2)
    return run


SELF = [(1, 1), (7, 7), (130, 130), (257, 257)]          # prefill: S == T
DECODE = [(1, 9), (7, 130), (3, 257), (130, 300)]         # fewer queries than keys


def test_block_size_is_what_the_sizes_straddle():
    assert ATTENTION_BLOCK == 128  # 130 and 257 cross one and two block boundaries


@pytest.mark.parametrize("causal", [False, True])
def test_attention_rule(causal, rng):
    """One executable for every (S, T): prefill and decode-like shapes."""
    g = graphc.trace(attention_rule(causal), spec((H, "S", D)), spec((H, "T", D)),
                     spec((H, "T", D)))
    cases = [qkv(rng, S, T) for S, T in SELF + DECODE]
    if not causal:
        cases.append(qkv(rng, 130, 7))   # more queries than keys is fine without a mask
    exe = check_graph(g, cases)
    assert step_kinds(exe) == ["attention"], exe.program
    assert exe.program.steps[0].causal is causal


@pytest.mark.parametrize("fn", ["split", "one"])
def test_float32_score_softmax_wide_range_masks_nan(fn, rng):
    """The float32 score-block softmax (vmath's _exp32, which the compiler vectorises):
    scores over +-300 after scaling, causal rows of every length, against float64; masked
    keys and -inf scores come out exactly 0, values below float32's normal range tiny; a
    NaN score makes its row NaN (as the reference softmax does), no other row."""
    from graphc.backends.numba_cpu.cache import load_module
    from graphc.backends.numba_cpu.templates import attention_softmax
    kernel = softmax_kernel(load_module(attention_softmax("float32"))[0], fn)
    B, R, T, row0, scale = 3, 37, 300, 200, 0.37
    base = (randn(rng, (B, R, T)) * 800).astype(np.float32)
    base[1, 4, :5] = -np.inf
    base[2, 6, 7] = np.nan
    s, inv = base.copy(), np.empty((B, R), np.float32)
    kernel(s, inv, scale, True, row0, 0)
    x = base.astype(np.float64) * np.float32(scale)
    masked = np.arange(T)[None, :] > (row0 + np.arange(R))[:, None]
    x[:, masked] = -np.inf
    with np.errstate(invalid="ignore"):
        e = np.exp(x - x.max(-1, keepdims=True))
        want = e / e.sum(-1, keepdims=True)
    got = s * inv[..., None]
    assert np.all(s[:, masked] == 0) and np.all(s[1, 4, :5] == 0)
    assert np.isnan(got[2, 6]).all() and np.isnan(want[2, 6]).all()
    ok = np.ones((B, R), bool)
    ok[2, 6] = False
    assert not np.isnan(got[ok]).any()
    tiny = want[ok] < 1e-38           # below float32's normal range
    assert np.all(got[ok][tiny] < 1e-37) and tiny.any()
    assert np.linalg.norm(got[ok] - want[ok]) / np.linalg.norm(want[ok]) < 1e-6


@pytest.mark.parametrize("fn", ["split", "one"])
def test_float32_score_softmax_long_rows(fn, rng):
    """Rows of 20k keys and causal rows ending at and around the 256-key chunks the sum
    is taken in (float32 within a chunk, float64 across): within 1e-6 of float64."""
    from graphc.backends.numba_cpu.cache import load_module
    from graphc.backends.numba_cpu.templates import attention_softmax
    kernel = softmax_kernel(load_module(attention_softmax("float32"))[0], fn)
    for B, R, T, row0, causal in [(2, 3, 20000, 0, False), (1, 6, 600, 253, True),
                                  (1, 3, 600, 510, True), (2, 1, 20000, 0, False),
                                  (2, 1, 600, 255, True), (1, 40, 700, 240, True)]:
        base = randn(rng, (B, R, T)) * 4
        s, inv = base.copy(), np.empty((B, R), np.float32)
        kernel(s, inv, 0.5, causal, row0, 0)
        x = base.astype(np.float64) * 0.5
        if causal:               # rows end at keys 254 .. 259 (chunk end 256), 511 .. 513
            x[:, np.arange(T)[None, :] > (row0 + np.arange(R))[:, None]] = -np.inf
        e = np.exp(x - x.max(-1, keepdims=True))
        want = e / e.sum(-1, keepdims=True)
        got = s * inv[..., None]
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-6, (T, row0)
        assert np.abs(got.sum(-1) - 1).max() < 1e-5


def test_attention_float64(rng):
    """A float64 graph keeps float64 scores: 1e-12 against the reference."""
    g = graphc.trace(attention_rule(True, "float64"), spec((H, "S", D), "float64"),
                     spec((H, "T", D), "float64"), spec((H, "T", D), "float64"))
    exe = check_graph(g, [qkv(rng, S, T, "float64") for S, T in [(7, 7), (130, 257)]])
    assert step_kinds(exe) == ["attention"]


def test_attention_op_4d_batch(rng):
    """graphc.ops.attention with [B, H, S, d] operands and a value dim != head dim."""
    B = 2
    exe = check_fn(lambda q, k, v: graphc.ops.attention(q, k, v, scale=0.3, causal=True),
                   [spec((B, H, "S", D)), spec((B, H, "T", D)), spec((B, H, "T", 5))],
                   [(randn(rng, (B, H, S, D)), randn(rng, (B, H, T, D)),
                     randn(rng, (B, H, T, 5))) for S, T in [(1, 1), (130, 131), (2, 257)]])
    assert step_kinds(exe) == ["attention"]


def _mha(x, causal):
    """Heads split from [S, H*D] by reshape + transpose (strided views, no copies), merged
    back after the attention (a remapped store)."""
    S = x.shape[0]

    def heads(t):
        return t.reshape(S, H, D).transpose(1, 0, 2)
    q, k, v = heads(x), heads(graphc.tanh(x)), heads(x * 0.5)
    o = attention_rule(causal)(q, k, v)
    return o.transpose(1, 0, 2).reshape(S, H * D)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_heads_views_and_store(causal, rng):
    exe = check_fn(lambda x: _mha(x, causal), [spec(("S", H * D))],
                   [(randn(rng, (S, H * D)),) for S in (1, 7, 130, 257)])
    assert "attention" in step_kinds(exe)


@pytest.mark.parametrize("heads,workers,dtype", [(3, 3, "float32"), (9, 2, "float32"),
                                                  (4, 2, "float64")])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_heads_split_over_threads(heads, workers, dtype, causal, rng,
                                            monkeypatch):
    """Large attentions split the heads over the threads (each thread all its row
    blocks): one head per thread, an uneven 5 + 4, and float64 scores, with heads viewed
    out of [S, h*D] and stored back, causal and not, prefill and decode-like shapes."""
    from graphc.backends.numba_cpu import threads
    monkeypatch.setattr(threads, "workers", lambda: workers)
    monkeypatch.setattr(threads, "SPLIT_MIN_MACS", 0)
    split, blockwise = [], []
    real_run, real_matmul = threads.run_parallel, threads.matmul
    monkeypatch.setattr(threads, "run_parallel", lambda t: (split.append(len(t)), real_run(t)))
    monkeypatch.setattr(threads, "matmul", lambda *a: (blockwise.append(1), real_matmul(*a)))

    def fn(x, y):
        S, T = x.shape[0], y.shape[0]
        q = x.reshape(S, heads, D).transpose(1, 0, 2)
        k = y.reshape(T, heads, D).transpose(1, 0, 2)
        v = graphc.tanh(y).reshape(T, heads, D).transpose(1, 0, 2)
        s = graphc.scale(q @ k.transpose(0, 2, 1), 0.4)
        if causal:
            s = s + graphc.causal_mask(S, T, dtype=dtype)
        return (graphc.softmax(s, axis=-1) @ v).transpose(1, 0, 2).reshape(S, heads * D)
    exe = check_fn(fn, [spec(("S", heads * D), dtype), spec(("T", heads * D), dtype)],
                   [(randn(rng, (S, heads * D), dtype), randn(rng, (T, heads * D), dtype))
                    for S, T in [(1, 1), (130, 130), (257, 257), (3, 257)]])
    assert "attention" in step_kinds(exe)
    assert workers in split and not blockwise    # the heads went to the threads


@pytest.mark.parametrize("causal", [False, True])
def test_attention_without_queries_is_empty(causal, rng):
    """No query rows (S = 0) against some keys: an empty result, as the reference gives,
    through a view of the output, a remapped store and an epilogue."""
    specs = [spec((H, "S", D)), spec((H, "T", D)), spec((H, "T", D))]
    exe = check_graph(graphc.trace(attention_rule(causal), *specs),
                      [qkv(rng, 0, 5), qkv(rng, 3, 5)])
    assert exe(*qkv(rng, 0, 5)).shape == (H, 0, D)
    fn = attention_rule(causal)
    check_fn(lambda q, k, v: fn(q, k, v).transpose(1, 0, 2).reshape(q.shape[1], H * D),
             specs, [qkv(rng, 0, 5), qkv(rng, 2, 5)])
    check_fn(lambda q, k, v: fn(q, k, v) * 2.0 + 1.0, specs, [qkv(rng, 0, 5), qkv(rng, 2, 5)])


def test_attention_epilogue(rng):
    """attention(...) * 2 + residual: the epilogue kernel reads the accumulator."""
    fn = attention_rule(False)
    exe = check_fn(lambda q, k, v, r: graphc.relu(fn(q, k, v) * 2.0 + r),
                   [spec((H, "S", D)), spec((H, "S", D)), spec((H, "S", D)),
                    spec((H, "S", D))],
                   [qkv(rng, S, S) + (randn(rng, (H, S, D)),) for S in (7, 130)])
    (step,) = exe.program.steps
    assert step.epilogue is not None


def test_causal_more_queries_than_keys_is_an_input_error(rng):
    """Causal attention with S > T: no key for the first queries. The reference raises
    InputError; the numba backend must too (not return NaN rows)."""
    g = graphc.trace(attention_rule(True), spec((H, "S", D)), spec((H, "T", D)),
                     spec((H, "T", D)))
    exe = graphc.compile(g, backend="numba")
    with pytest.raises(graphc.InputError, match="5 (causal queries|query rows)") as err:
        exe(*qkv(rng, 5, 3))
    assert "shapes f32[" in str(err.value) and "test_numba_templates.py" in str(err.value)
    out = exe(*qkv(rng, 3, 5))   # the executable still works afterwards
    assert np.isfinite(out).all()
    direct = graphc.trace(lambda q, k, v: graphc.ops.attention(q, k, v, causal=True),
                          spec((H, "S", D)), spec((H, "T", D)), spec((H, "T", D)))
    with pytest.raises(graphc.InputError, match="causal queries"):
        graphc.compile(direct, backend="numba")(*qkv(rng, 4, 2))


# -- GEMM with epilogue at odd sizes -----------------------------------------------------

@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_gemm_epilogue_odd_sizes(act, rng):
    K, N = 33, 65
    W, b = randn(rng, (K, N), scale=1 / math.sqrt(K)), randn(rng, (N,))
    fn = getattr(graphc, act)
    exe = check_fn(lambda x, r: fn(x @ W + b) + r, [spec(("S", K)), spec(("S", N))],
                   [(randn(rng, (S, K)), randn(rng, (S, N))) for S in (1, 7, 130, 257)])
    (step,) = exe.program.steps
    assert step.epilogue is not None and step.in_place


def test_gemm_transposed_epilogue_odd_sizes(rng):
    """x^T @ W with a transposed, scaled store: operands and store both remapped."""
    K, N = 33, 65
    W = randn(rng, (K, N), scale=1 / math.sqrt(K))
    exe = check_fn(lambda x: graphc.scale(x.T @ W, 0.5).T, [spec((K, "S"))],
                   [(randn(rng, (K, S)),) for S in (1, 7, 130, 257)])
    (step,) = exe.program.steps
    assert not step.in_place


def test_gemm_weight_views_are_not_copied(rng):
    """A constant read only as a GEMM operand stays the caller's (transposed) view: BLAS
    reads it in place, so a model's weights are not held twice per executable. A constant
    that a kernel also reads is made C-contiguous for it."""
    w = randn(rng, (6, 8))                     # [out, in], like a Linear weight
    u = randn(rng, (1, 12))
    wt = w.T                                   # F-contiguous view

    def fn(x):
        return (graphc.relu(x @ graphc.constant(wt, name="w^T"))
                + graphc.constant(u[:, ::2], name="u"))     # strided [1, 6]
    exe = check_fn(fn, [spec(("S", 8))], [(randn(rng, (S, 8)),) for S in (1, 5)])
    by_name = {exe.graph.nodes[n].attrs.get("name"): a for n, a in exe.constants.items()}
    assert np.shares_memory(by_name["w^T"], w)          # the GEMM's weight: no copy
    assert not np.shares_memory(by_name["u"], u)      # read by the epilogue kernel
    assert by_name["u"].flags.c_contiguous


@pytest.mark.parametrize("kind", ["add", "bool"])
@pytest.mark.parametrize("M1,M2", [(1, 1), (1, 3), (3, 1), (2, 3), (5, 1)])
@pytest.mark.parametrize("R", [37, 1])
@pytest.mark.parametrize("rows", ["broadcast", "own", "shared"])
def test_masked_score_softmax_split_over_threads(kind, M1, M2, R, rows, rng):
    """The masked score softmax split over the threads (runtime.split_softmax: by the
    mask's leading dim when it has a part per thread, else by query rows, each score row
    b reading mask[b // M2, b % M2]), causal from query row 40 on: equal to one serial
    call, and within 1e-6 of float64. The mask broadcasts over its query rows (stride 0),
    as a padding mask does, or has its own per row, for every entry or shared by the
    entries of each M1 (a causal mask tensor over the heads: transposed once). 37 rows: split by rows, two parts of whole cache lines
    (32 and 5); one: a decode step's row."""
    from graphc.backends.numba_cpu.cache import load_module
    from graphc.backends.numba_cpu.templates import attention_softmax
    mod = load_module(attention_softmax("float32", kind))[0]
    B, T, row0, scale, fill = M1 * M2, 300, 40, 0.4, -np.inf
    base = randn(rng, (B, R, T)) * 3
    shape = (M1, 1 if rows == "shared" else M2, 1 if rows == "broadcast" else R, T)
    if kind == "add":
        rowmask = np.where(rng.random(shape) < 0.3, -np.inf, 0).astype(np.float32)
    else:
        rowmask = rng.random(shape) >= 0.3
    rowmask[..., 0] = 0 if kind == "add" else True         # no row masked whole
    mask = np.broadcast_to(rowmask, (M1, M2, R, T))
    outs = []
    for fn in ("one", "split"):
        fn = softmax_kernel(mod, fn, masked=True)
        s, inv = base.copy(), np.empty((B, R), np.float32)
        fn(s, inv, scale, True, row0, 0, mask, fill)
        outs.append(s * inv[..., None])
    np.testing.assert_array_equal(outs[0], outs[1])
    x = base.astype(np.float64) * np.float32(scale)
    keep = (mask.reshape(B, R, T) == 0) if kind == "add" else mask.reshape(B, R, T)
    x = np.where(keep, x, -np.inf)
    x[:, np.arange(T)[None, :] > (row0 + np.arange(R))[:, None]] = -np.inf
    e = np.exp(x - x.max(-1, keepdims=True))
    want = e / e.sum(-1, keepdims=True)
    assert np.linalg.norm(outs[1] - want) / np.linalg.norm(want) < 1e-6
