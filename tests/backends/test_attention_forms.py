"""Attention as real models write it, fused into ONE attention step on numba and on cupy
(its CPU emulation here; the GPU with ``-m gpu``), against the float64 reference.

q [B, H, S, D] with B in {1, 3} (one executable, B symbolic), k / v with fewer heads
(grouped-query attention 4:1 and 2:1: a broadcasting matmul over [B, Hkv, G, S, D], k / v
repeated per head by concat), S != T (decode-like: fewer queries than keys), causal or
not, additive masks of several shapes (padding [B, 1, 1, T], a sliding window [S, T] or
[1, 1, S, T], an arbitrary [B, H, S, T]), bool masks through where(), a causal_mask with
a padding mask, and the head merge after it ([B, S, H*D], a strided store). Then: each
form is one step with no softmax kernel and no [S, T] buffer; the row blocks and the
head split over threads of the numba path; layouts the kernels cannot take directly
(copied, never an error); what ``--explain`` says when the rule does not fire.

Shapes are small (S, T <= 70, D = 16) so the module compiles once per backend and the
suite stays quick; the emulated flash kernel still crosses its 32-key and 32-query tiles.
"""
import math

import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.backends.cupy_gpu import gpu_available, nvrtc
from graphc.lower.program import AttentionStep
from graphc.passes import Explain, optimize
from numba_check import body_ops, check_graph, randn, rel_err, step_kinds

D = 16
H = 8
NEG = np.float32(-np.inf)


@pytest.fixture(params=["numba", "cupy-emu", pytest.param("cupy", marks=pytest.mark.gpu)])
def backend(request):
    if request.param == "cupy":
        ok, why = gpu_available()
        if not ok:
            pytest.skip(f"no GPU: {why}")
    return request.param


def compile_for(g, backend):
    return graphc.compile(g, backend=backend)


def merge(o):
    """[B, H, S, D] -> [B, S, H*D]: the head merge after the attention."""
    return o.transpose(0, 2, 1, 3).reshape(o.shape[0], o.shape[2], o.shape[1] * o.shape[3])


def kT(k):
    return k.transpose(0, 1, 3, 2)


# -- masks (fresh random, never all -inf on a row: key 0 always visible) ----------------
def padding(rng, B, T):
    m = np.where(rng.random((B, 1, 1, T)) < 0.3, NEG, np.float32(0))
    m[..., 0] = 0
    return m


def window(S, T, width=9):
    """Sliding window, bottom-right aligned like the causal mask: query i sees keys
    i + T - S - width < j <= i + T - S."""
    i = np.arange(S)[:, None] + (T - S)
    j = np.arange(T)[None, :]
    return np.where((j <= i) & (j > i - width), np.float32(0), NEG)


def keep(rng, shape):
    m = rng.random(shape) < 0.7
    m[..., 0] = True
    return m


# -- the forms: (fn, specs(Hkv), inputs(rng, B, S, T, Hkv), causal) ---------------------
def f_plain(q, k, v):
    return merge(graphc.softmax(graphc.scale(q @ kT(k), 1 / math.sqrt(D)), axis=-1) @ v)


def f_padding(q, k, v, m):          # HF: (q @ k^T) / sqrt(d) + mask
    return merge(graphc.softmax((q @ kT(k)) / math.sqrt(D) + m, axis=-1) @ v)


def f_window(q, k, v, m):           # q @ k^T * (a one-element constant) + a [S, T] window
    return merge(graphc.softmax(q @ kT(k) * np.array(0.25, np.float32) + m, axis=-1) @ v)


def f_window4d(q, k, v, m):         # scale(q) @ k^T + a [1, 1, S, T] window
    return merge(graphc.softmax((q * 0.25) @ kT(k) + m, axis=-1) @ v)


def f_arbitrary(q, k, v, m):        # any additive [B, H, S, T]
    return merge(graphc.softmax(graphc.scale(q @ kT(k), 0.25) + m, axis=-1) @ v)


def f_bool(q, k, v, m):             # where(mask, scores, -inf)
    return merge(graphc.softmax(graphc.where(m, (q @ kT(k)) / 4.0, -np.inf), axis=-1) @ v)


def f_bool_fill_causal(q, k, v, m):  # GPT-2: where(mask, s, finfo.min), then causal
    s = graphc.where(m, graphc.scale(q @ kT(k), 0.25), float(np.finfo(np.float32).min))
    s = s + graphc.causal_mask(q.shape[2], k.shape[2])
    return merge(graphc.softmax(s, axis=-1) @ v)


def f_bool_drop(q, k, v, m):        # where(drop, -inf, scores): True marks the dropped
    return merge(graphc.softmax(graphc.where(m, -np.inf, (q @ kT(k)) / 4.0), axis=-1) @ v)


def f_causal_padding(q, k, v, m):   # causal_mask (as [1, 1, S, T]) + padding
    S, T = q.shape[2], k.shape[2]
    s = (q @ kT(k)) / 4.0 + graphc.causal_mask(S, T).reshape(1, 1, S, T) + m
    return merge(graphc.softmax(s, axis=-1) @ v)


def f_causal_sum(q, k, v, m):       # one mask made of causal + padding
    mask = graphc.causal_mask(q.shape[2], k.shape[2]) + m
    return merge(graphc.softmax((q @ kT(k)) / 4.0 + mask, axis=-1) @ v)


def f_softcap(q, k, v, m):          # Gemma 2: cap * tanh(s * scale / cap), then the mask
    s = (q @ kT(k)) * 0.25
    s = graphc.tanh(s / 3.0) * 3.0
    return merge(graphc.softmax(s + m, axis=-1) @ v)


def _flat(x):                       # [B, H, T, D] -> [B*H, T, D]: bmm's batch
    return x.reshape(x.shape[0] * x.shape[1], x.shape[2], x.shape[3])


def f_bmm_bias(q, k, v, m):         # BLOOM: bias [B, H, 1, T] + scale(bmm) in [B*H, S, T]
    B, S, T = q.shape[0], q.shape[2], k.shape[2]
    s = _flat(m) + graphc.scale(_flat(q) @ _flat(k).transpose(0, 2, 1), 0.25)
    p = graphc.softmax(s.reshape(B, H, S, T), axis=-1)
    return merge((_flat(p) @ _flat(v)).reshape(B, H, S, D))


TRIL = np.tril(np.ones((1, 1, 80, 80), bool))      # a causal buffer (GPT-Neo's "bias")


def _bmm_tril(fill, drop):
    """GPT-Neo: where(bias[.., T-S:T, :T], bmm, fill) + padding; nanoGPT: where(bias ==
    0, -inf, scores) with a float tril buffer. The buffer's slice becomes the causal flag."""
    def f(q, k, v, m):
        B, S, T = q.shape[0], q.shape[2], k.shape[2]
        s = (_flat(q) @ _flat(k).transpose(0, 2, 1)).reshape(B, H, S, T)
        if drop:
            tri = graphc.constant(TRIL.astype(np.float32))[:, :, T - S:T, :T]
            s = graphc.where(graphc.equal(tri, 0.0), fill, s)
        else:
            s = graphc.where(graphc.constant(TRIL)[:, :, T - S:T, :T], s, fill)
        p = graphc.softmax(s + m, axis=-1)
        return merge((_flat(p) @ _flat(v)).reshape(B, H, S, D))
    return f


def f_bmm_keep_padding(q, k, v, m):  # where(keep, s, finfo.min) + an additive mask
    B, S, T = q.shape[0], q.shape[2], k.shape[2]
    s = (_flat(q) @ _flat(k).transpose(0, 2, 1)).reshape(B, H, S, T)
    keep = graphc.greater(m, -1.0)         # a bool [B, 1, 1, T] beside the additive one
    s = graphc.where(keep, s, float(np.finfo(np.float32).min)) + m
    return merge((_flat(graphc.softmax(s, axis=-1)) @ _flat(v)).reshape(B, H, S, D))


def f_gqa_broadcast(q, k, v, m):    # broadcasting matmul over [B, Hkv, G, S, D]
    B, S, T, hkv = q.shape[0], q.shape[2], k.shape[2], k.shape[1]
    q5 = q.reshape(B, hkv, H // hkv, S, D)
    k5, v5 = k.reshape(B, hkv, 1, T, D), v.reshape(B, hkv, 1, T, D)
    s = q5 @ k5.transpose(0, 1, 2, 4, 3) / math.sqrt(D) + m.reshape(B, 1, 1, 1, T)
    return merge((graphc.softmax(s, axis=-1) @ v5).reshape(B, H, S, D))


def _per_head(x):                   # each kv head repeated G times (torch repeat_kv)
    hkv = x.shape[1]
    return graphc.concat(*[x[:, i:i + 1] for i in range(hkv) for _ in range(H // hkv)],
                         axis=1)


def f_gqa_repeat(q, k, v):          # k, v repeated per head, causal
    s = graphc.scale(q @ kT(_per_head(k)), 0.25) \
        + graphc.causal_mask(q.shape[2], k.shape[2])
    return merge(graphc.softmax(s, axis=-1) @ _per_head(v))


def f_gqa_tile(q, k, v, m):         # concat of copies: head h reads kv head h % Hkv
    G = H // k.shape[1]
    kk, vv = graphc.concat(*[k] * G, axis=1), graphc.concat(*[v] * G, axis=1)
    return merge(graphc.softmax((q @ kT(kk)) / 4.0 + m, axis=-1) @ vv)


def _qkv_specs(hkv):
    return [spec(("B", H, "S", D)), spec(("B", hkv, "T", D)), spec(("B", hkv, "T", D))]


FORMS = {   # name -> (fn, mask spec or None, mask maker(rng, B, S, T) or None, causal)
    "plain": (f_plain, None, None, False),
    "padding": (f_padding, spec(("B", 1, 1, "T")), lambda r, B, S, T: padding(r, B, T),
                False),
    "window": (f_window, spec(("S", "T")), lambda r, B, S, T: window(S, T), False),
    "window4d": (f_window4d, spec((1, 1, "S", "T")),
                 lambda r, B, S, T: window(S, T)[None, None], False),
    "arbitrary": (f_arbitrary, spec(("B", H, "S", "T")),
                  lambda r, B, S, T: randn(r, (B, H, S, T)), False),
    "bool": (f_bool, spec(("B", 1, "S", "T"), "bool"),
             lambda r, B, S, T: keep(r, (B, 1, S, T)), False),
    "bool_fill_causal": (f_bool_fill_causal, spec(("B", 1, 1, "T"), "bool"),
                         lambda r, B, S, T: keep(r, (B, 1, 1, T)), True),
    "bool_drop": (f_bool_drop, spec(("B", 1, 1, "T"), "bool"),
                  lambda r, B, S, T: ~keep(r, (B, 1, 1, T)), False),
    "causal_padding": (f_causal_padding, spec(("B", 1, 1, "T")),
                       lambda r, B, S, T: padding(r, B, T), True),
    "causal_sum": (f_causal_sum, spec(("B", 1, 1, "T")),
                   lambda r, B, S, T: padding(r, B, T), True),
    "softcap": (f_softcap, spec(("B", 1, 1, "T")), lambda r, B, S, T: padding(r, B, T),
                False),
    "bmm_bias": (f_bmm_bias, spec(("B", H, 1, "T")),
                 lambda r, B, S, T: randn(r, (B, H, 1, T)), False),
    "bmm_tril_min": (_bmm_tril(float(np.finfo(np.float32).min), False),
                     spec(("B", 1, 1, "T")), lambda r, B, S, T: padding(r, B, T), True),
    "bmm_tril_drop_inf": (_bmm_tril(-np.inf, True), spec(("B", 1, 1, "T")),
                          lambda r, B, S, T: padding(r, B, T), True),
    "bmm_keep_padding": (f_bmm_keep_padding, spec(("B", 1, 1, "T")),
                         lambda r, B, S, T: padding(r, B, T), False),
}
GQA = {     # name -> (fn, takes a padding mask, causal)
    "gqa_broadcast": (f_gqa_broadcast, True, False),
    "gqa_repeat": (f_gqa_repeat, False, True),
    "gqa_tile": (f_gqa_tile, True, False),
}
SIZES = [(1, 37, 37), (3, 5, 45), (3, 1, 20), (1, 70, 70)]      # (B, S, T)


def form_graph(name, hkv=H):
    if name in FORMS:
        fn, mspec, _, _ = FORMS[name]
        specs = _qkv_specs(H) + ([mspec] if mspec is not None else [])
    else:
        fn, masked, _ = GQA[name]
        specs = _qkv_specs(hkv) + ([spec(("B", 1, 1, "T"))] if masked else [])
    return graphc.trace(fn, *specs)


def form_inputs(name, rng, B, S, T, hkv=H):
    args = [randn(rng, (B, H, S, D)), randn(rng, (B, hkv, T, D)), randn(rng, (B, hkv, T, D))]
    if name in FORMS:
        make = FORMS[name][2]
        if make is not None:
            args.append(make(rng, B, S, T))
    elif GQA[name][1]:
        args.append(padding(rng, B, T))
    return tuple(args)


def assert_one_attention(exe, causal=None, mask=None):
    """One AttentionStep; no softmax and no matmul computed anywhere else; no kv copies
    (no concat, repeat or broadcast_to); no other step makes a buffer of the scores' [.., S, T] (masks and kv
    heads are read where they are; a bool mask to invert is its own small kernel)."""
    steps = [s for s in exe.program.steps if isinstance(s, AttentionStep)]
    assert len(steps) == 1, exe.program
    assert not {"softmax", "concat", "matmul", "repeat", "broadcast_to"} & body_ops(exe), \
        body_ops(exe)
    (step,) = steps
    body = exe.graph.nodes[step.node].attrs["body"]
    (att,) = [n for n in body.nodes.values() if n.op == "attention"]
    q, k = (body.nodes[i].type.shape for i in att.inputs[:2])
    for other in exe.program.steps:
        shape = exe.graph.nodes[other.node].type.shape
        assert other is step or tuple(shape[-2:]) != (q[-2], k[-2]), exe.program
    if causal is not None:
        assert step.causal is causal
    if mask is not None:
        assert (step.mask is not None) is mask
    return step


@pytest.mark.parametrize("name", list(FORMS))
def test_masked_forms(name, backend, rng):
    g = form_graph(name)
    exe = compile_for(g, backend)
    check_graph(g, [form_inputs(name, rng, B, S, T) for B, S, T in SIZES], exe=exe)
    assert_one_attention(exe, causal=FORMS[name][3], mask=FORMS[name][1] is not None)


@pytest.mark.parametrize("hkv", [2, 4], ids=["4:1", "2:1"])
@pytest.mark.parametrize("name", list(GQA))
def test_gqa_forms(name, hkv, backend, rng):
    """kv heads read by their group of query heads, never copied: the program is the one
    attention step (no concat, no broadcast), its k and v operands have hkv heads."""
    g = form_graph(name, hkv)
    exe = compile_for(g, backend)
    check_graph(g, [form_inputs(name, rng, B, S, T, hkv) for B, S, T in SIZES], exe=exe)
    step = assert_one_attention(exe, causal=GQA[name][2], mask=GQA[name][1])
    kv = [exe.graph.nodes[step.operands[x.operand]].type for x in (step.k, step.v)]
    assert all(t.shape[1] == hkv for t in kv), kv


# -- kv heads repeated as models write it: HF's repeat_kv, graphc.repeat (llama.py),
# torch's repeat_interleave, unsqueeze + expand + reshape. Each is read from the kv source
# (no copy), against attention over np.repeat'ed kv in float64 NumPy.
def hf_repeat_kv(x, n_rep):         # transformers' repeat_kv
    B, KV, T, Dh = x.shape
    return x[:, :, None, :, :].expand(B, KV, n_rep, T, Dh).reshape(B, KV * n_rep, T, Dh)


def unsqueeze_expand(x, n_rep):
    B, KV, T, Dh = x.shape
    return x.unsqueeze(2).expand(B, KV, n_rep, T, Dh).reshape(B, KV * n_rep, T, Dh)


KV_REPEATS = {   # name -> (repeat(x, n_rep), causal, padding mask)
    "hf_repeat_kv": (hf_repeat_kv, True, True),
    "graphc_repeat": (lambda x, n: graphc.repeat(x, n, axis=1), True, True),
    "repeat_interleave": (lambda x, n: x.repeat_interleave(n, dim=1), False, True),
    "unsqueeze_expand": (unsqueeze_expand, True, False),
}


def _kv_repeat_fn(name):
    rep, causal, masked = KV_REPEATS[name]

    def fn(q, k, v, *m):
        n_rep = q.shape[1] // k.shape[1]
        s = q @ kT(rep(k, n_rep)) / math.sqrt(D)
        if causal:
            s = s + graphc.causal_mask(q.shape[2], k.shape[2])
        if masked:
            s = s + m[0]
        return merge(graphc.softmax(s, axis=-1) @ rep(v, n_rep))
    return fn


def numpy_gqa(q, k, v, m, causal, tile=False):
    """float64 attention over k / v repeated per query head with np.repeat (head h reads
    kv head h // G), or np.tile (h % Hkv)."""
    G = q.shape[1] // k.shape[1]
    if tile:
        kk, vv = np.tile(k, (1, G, 1, 1)), np.tile(v, (1, G, 1, 1))
    else:
        kk, vv = np.repeat(k, G, axis=1), np.repeat(v, G, axis=1)
    q, kk, vv = (x.astype(np.float64) for x in (q, kk, vv))
    s = q @ kk.transpose(0, 1, 3, 2) / math.sqrt(D)
    S, T = q.shape[2], k.shape[2]
    if causal:
        s = np.where(np.arange(T)[None, :] > np.arange(S)[:, None] + (T - S), -np.inf, s)
    if m is not None:
        s = s + m
    p = np.exp(s - s.max(-1, keepdims=True))
    return merge((p / p.sum(-1, keepdims=True)) @ vv)


@pytest.mark.parametrize("name,hkv", [("hf_repeat_kv", 2), ("hf_repeat_kv", 4),
                                      ("graphc_repeat", 2), ("graphc_repeat", 4),
                                      ("repeat_interleave", 2), ("unsqueeze_expand", 4)],
                         ids=lambda x: f"{H // x}:1" if isinstance(x, int) else x)
def test_gqa_kv_repeated_per_head(name, hkv, backend, rng):
    """k / v repeated per query head (copies, as written) are fused into the one
    attention step reading the hkv kv heads where they are: no repeat or broadcast_to
    kernel, no [.., S, T] buffer; B in {1, 3} with one executable."""
    _, causal, masked = KV_REPEATS[name]
    specs = _qkv_specs(hkv) + ([spec(("B", 1, 1, "T"))] if masked else [])
    g = graphc.trace(_kv_repeat_fn(name), *specs)
    assert {"repeat", "broadcast_to"} & set(g.op_counts()), g.op_counts()   # as written
    exe = compile_for(g, backend)
    for B, S, T in SIZES:
        args = list(form_inputs("gqa_repeat", rng, B, S, T, hkv))
        m = padding(rng, B, T) if masked else None
        if masked:
            args.append(m)
        got = exe(*args)
        want = numpy_gqa(*args[:3], m, causal)
        assert got.dtype == np.float32 and got.shape == want.shape
        finite = np.isfinite(want)
        assert finite.all()
        assert rel_err(got, want) < 1e-5, (B, S, T, rel_err(got, want))
    step = assert_one_attention(exe, causal=causal, mask=masked)
    kv = [exe.graph.nodes[step.operands[x.operand]].type for x in (step.k, step.v)]
    assert all(t.shape[1] == hkv for t in kv), kv
    assert step_kinds(exe) == ["attention"], step_kinds(exe)


def tile_expand(x, n_rep):           # x[:, None] broadcast: head h reads kv head h % Hkv
    B, KV, T, Dh = x.shape
    return x[:, None].expand(B, n_rep, KV, T, Dh).reshape(B, n_rep * KV, T, Dh)


@pytest.mark.parametrize("form", ["tile_expand", "shared_by_batch"])
def test_gqa_kv_tiled_or_shared_by_the_batch(form, backend, rng):
    """expand + reshape that tiles the kv heads (h % Hkv, padding mask), and HF's
    repeat_kv of a kv [1, Hkv, T, D] that the expand also broadcasts over the batch
    (causal): still one attention step on the kv source, no copy."""
    hkv = 2
    if form == "tile_expand":
        def fn(q, k, v, m):
            s = q @ kT(tile_expand(k, H // hkv)) / math.sqrt(D) + m
            return merge(graphc.softmax(s, axis=-1) @ tile_expand(v, H // hkv))
        kv_b, causal, masked = "B", False, True
    else:
        def fn(q, k, v):
            B, T = q.shape[0], k.shape[2]
            rep = [x[:, :, None].expand(B, hkv, H // hkv, T, D).reshape(B, H, T, D)
                   for x in (k, v)]
            s = q @ kT(rep[0]) / math.sqrt(D) + graphc.causal_mask(q.shape[2], T)
            return merge(graphc.softmax(s, axis=-1) @ rep[1])
        kv_b, causal, masked = 1, True, False
    specs = [spec(("B", H, "S", D)), spec((kv_b, hkv, "T", D)), spec((kv_b, hkv, "T", D))]
    g = graphc.trace(fn, *(specs + ([spec(("B", 1, 1, "T"))] if masked else [])))
    assert "broadcast_to" in g.op_counts()
    exe = compile_for(g, backend)
    for B, S, T in SIZES[:3]:
        kb = B if kv_b == "B" else 1
        args = [randn(rng, (B, H, S, D)), randn(rng, (kb, hkv, T, D)),
                randn(rng, (kb, hkv, T, D))]
        m = padding(rng, B, T) if masked else None
        got = exe(*args, *([m] if masked else []))
        k, v = (np.broadcast_to(x, (B,) + x.shape[1:]) for x in args[1:])
        want = numpy_gqa(args[0], k, v, m, causal, tile=form == "tile_expand")
        assert got.shape == want.shape and rel_err(got, want) < 1e-5, rel_err(got, want)
    step = assert_one_attention(exe, causal=causal, mask=masked)
    kv = [exe.graph.nodes[step.operands[x.operand]].type for x in (step.k, step.v)]
    assert all(hkv in t.shape and H not in t.shape for t in kv), kv


def test_gqa_kv_repeated_before_the_head_transpose(backend, rng):
    """k / v [B, T, Hkv, D] repeated on their head axis, then .transpose(1, 2) (the
    k^T transpose merges with it): the attention reads the un-repeated source."""
    hkv = 2

    def fn(q, k, v, m):
        kk = k.repeat_interleave(H // hkv, dim=2).transpose(0, 2, 1, 3)
        vv = graphc.repeat(v, H // hkv, axis=2).transpose(0, 2, 1, 3)
        s = q @ kT(kk) / math.sqrt(D) + graphc.causal_mask(q.shape[2], k.shape[1]) + m
        return merge(graphc.softmax(s, axis=-1) @ vv)
    g = graphc.trace(fn, spec(("B", H, "S", D)), spec(("B", "T", hkv, D)),
                     spec(("B", "T", hkv, D)), spec(("B", 1, 1, "T")))
    exe = compile_for(g, backend)
    for B, S, T in SIZES[:3]:
        q, k, v = (randn(rng, (B, H, S, D)), randn(rng, (B, T, hkv, D)),
                   randn(rng, (B, T, hkv, D)))
        m = padding(rng, B, T)
        want = numpy_gqa(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), m, True)
        got = exe(q, k, v, m)
        assert got.shape == want.shape and rel_err(got, want) < 1e-5, rel_err(got, want)
    step = assert_one_attention(exe, causal=True, mask=True)
    kv = [exe.graph.nodes[step.operands[x.operand]].type for x in (step.k, step.v)]
    assert all(hkv in t.shape and H not in t.shape for t in kv), kv


def test_explain_says_why_kv_is_copied():
    """The rule fires but keeps a kv copy it cannot read through: a kv_copied event
    names the copy and the reason."""
    def kv_copied(fn, *specs):
        ex = Explain()
        out = optimize(graphc.trace(fn, *specs), "O2", instruments=[ex])
        assert ex.fired("softmax(scale(q @ k^T) [+ mask]) @ v => attention")
        return [e["message"] for e in ex.events if e["kind"] == "kv_copied"], out

    def five_d(q, k5, v5):           # a 5-D kv input broadcast: no [B, Hkv, T, D] source
        B, KV, _, T, Dh = k5.shape
        kk, vv = (x.expand(B, KV, 4, T, Dh).reshape(B, KV * 4, T, Dh) for x in (k5, v5))
        return graphc.softmax(q @ kT(kk) * 0.25, axis=-1) @ vv
    why, out = kv_copied(five_d, spec((3, H, "S", D)), spec((3, 2, 1, "T", D)),
                         spec((3, 2, 1, "T", D)))
    assert len(why) == 2 and "k is read as a copy" in why[0] and "v is" in why[1], why
    assert "the broadcast %1 f32[3,2,1,T,16] is not a reshape that adds the unit dim" in why[0]
    assert "broadcast_to" in {n.op for f in out.nodes.values() if f.op == "fused"
                              for n in f.attrs["body"].nodes.values()}

    def mixed(q, k, v):              # k grouped (h // 4), v tiled (h % 2)
        vv = tile_expand(v, 4)
        return graphc.softmax(q @ kT(graphc.repeat(k, 4, axis=1)) * 0.25, axis=-1) @ vv
    why, _ = kv_copied(mixed, *_qkv_specs(2))
    assert why == ["attention at %11: k and v repeat their heads differently (k group of 4, "
                   "v tile of 4): v is read as a copy"], why

    def shuffled(q, k, v):           # heads concatenated in an order no kernel reads
        kk = graphc.concat(*[k[:, i:i + 1] for i in (0, 1, 1, 0, 0, 1, 1, 0)], axis=1)
        return graphc.softmax(q @ kT(kk) * 0.25, axis=-1) @ graphc.repeat(v, 4, axis=1)
    why, _ = kv_copied(shuffled, *_qkv_specs(2))
    assert len(why) == 1 and "orders the 2 heads of %1 as [0, 1, 1, 0, 0, 1, 1, 0]" in why[0]


def test_issue_form_b3_head_merge_stored_in_place(backend, rng):
    """The form that crashed numba with 'attention output view must not copy': static
    B = 3, [B, H, S, D] merged to [B, S, H*D] after the attention. The kernels store
    into the output through its strides (no scratch for the attention output)."""
    B, Hs = 3, 4

    def fn(q, k, v, m):
        s = graphc.scale(q @ kT(k), 1 / math.sqrt(D)) + m
        o = graphc.softmax(s, axis=-1) @ v
        return o.transpose(0, 2, 1, 3).reshape(B, q.shape[2], Hs * D)
    g = graphc.trace(fn, spec((B, Hs, "S", D)), spec((B, Hs, "T", D)), spec((B, Hs, "T", D)),
                     spec((B, 1, 1, "T")))
    exe = compile_for(g, backend)
    cases = [(randn(rng, (B, Hs, S, D)), randn(rng, (B, Hs, T, D)), randn(rng, (B, Hs, T, D)),
              padding(rng, B, T)) for S, T in [(10, 10), (7, 33)]]
    check_graph(g, cases, exe=exe)
    step = assert_one_attention(exe, causal=False, mask=True)
    assert step_kinds(exe) == ["attention"] and step.epilogue is None
    for sized in exe._sized.values():
        assert step.node not in sized.scratch, "the attention output went through scratch"
    if backend.startswith("cupy"):      # the flash kernel's CUDA C compiles for the GPU
        if not nvrtc.available():
            pytest.skip("NVRTC is not installed (pip install 'graphc[gpu]')")
        for arch in nvrtc.ARCHS:
            assert ".entry" in nvrtc.compile_ptx(exe.source, arch)


def test_numba_row_blocks_and_head_split(monkeypatch, rng):
    """The numba path with query blocks of 16 rows (the mask sliced per block) and the
    heads split over 2 threads along the longest batch dim, for masks and GQA."""
    from graphc.backends.numba_cpu import runtime, threads
    monkeypatch.setattr(runtime, "ATTENTION_BLOCK", 16)
    monkeypatch.setattr(threads, "workers", lambda: 2)
    monkeypatch.setattr(threads, "SPLIT_MIN_MACS", 0)
    split = []
    real = threads.run_parallel
    monkeypatch.setattr(threads, "run_parallel", lambda t: (split.append(len(t)), real(t)))
    for name, hkv in [("causal_padding", H), ("bool", H), ("gqa_broadcast", 2),
                      ("gqa_tile", 4), ("arbitrary", H)]:
        g = form_graph(name, hkv)
        exe = compile_for(g, "numba")
        check_graph(g, [form_inputs(name, rng, B, S, T, hkv)
                        for B, S, T in [(3, 37, 37), (1, 20, 45)]], exe=exe)
        assert_one_attention(exe)
    assert 2 in split


def test_float64_masks_and_groups(backend, rng):
    """float64 graphs keep float64 scores and mask: 1e-12 against the reference."""
    def fn(q, k, v, m):
        return merge(graphc.ops.attention(q, k, v, m, scale=0.3, causal=True))
    g = graphc.trace(fn, spec(("B", H, "S", D), "float64"), spec(("B", 2, "T", D), "float64"),
                     spec(("B", 2, "T", D), "float64"), spec(("B", 1, 1, "T"), "float64"))
    exe = compile_for(g, backend)
    check_graph(g, [(randn(rng, (B, H, S, D), "float64"), randn(rng, (B, 2, T, D), "float64"),
                     randn(rng, (B, 2, T, D), "float64"),
                     padding(rng, B, T).astype(np.float64)) for B, S, T in [(3, 5, 40), (1, 33, 33)]],
                exe=exe)
    assert_one_attention(exe, causal=True, mask=True)


def test_layouts_the_kernels_cannot_take_are_copied(backend, rng):
    """A mask broadcast in a pattern two batch strides cannot describe ([1, 3, 1, S, T]
    over q's [2, 3, 4] with k's [2, 1, 4]) and an output stored with its head dim
    strided (o^T): correct through copies and scratch, never an internal error."""
    def fn(q, k, v, m):
        o = graphc.ops.attention(q, k, v, m, scale=0.25)
        return o.transpose(0, 1, 2, 4, 3)
    g = graphc.trace(fn, spec((2, 3, 4, "S", D)), spec((2, 1, 4, "T", D)),
                     spec((2, 1, 4, "T", D)), spec((1, 3, 1, "S", "T")))
    exe = compile_for(g, backend)
    check_graph(g, [(randn(rng, (2, 3, 4, S, D)), randn(rng, (2, 1, 4, T, D)),
                     randn(rng, (2, 1, 4, T, D)), randn(rng, (1, 3, 1, S, T)))
                    for S, T in [(9, 9), (3, 35)]], exe=exe)
    assert step_kinds(exe) == ["attention"]


def test_mask_over_keys_only_and_k_shared_by_all_heads(backend, rng):
    """The op's broadcasting at its edges: a [T] mask, a 2-D k / v shared by every
    batch entry and head (multi-query attention written as a plain matmul)."""
    def fn(q, k, v, m):
        return merge(graphc.softmax(q @ k.transpose(1, 0) * 0.25 + m, axis=-1) @ v)
    g = graphc.trace(fn, spec(("B", H, "S", D)), spec(("T", D)), spec(("T", D)), spec(("T",)))
    exe = compile_for(g, backend)
    check_graph(g, [(randn(rng, (B, H, S, D)), randn(rng, (T, D)), randn(rng, (T, D)),
                     padding(rng, 1, T).reshape(T)) for B, S, T in [(3, 6, 30), (1, 33, 33)]],
                exe=exe)
    assert_one_attention(exe, mask=True)


# -- when the rule does not fire, the explain log says why ------------------------------
def _missed(fn, *specs):
    ex = Explain()
    optimize(graphc.trace(fn, *specs), "O2", instruments=[ex])
    assert not ex.fired("softmax(scale(q @ k^T) [+ mask]) @ v => attention")
    return " | ".join(e["reason"] for e in ex.missed(
        "softmax(scale(q @ k^T) [+ mask]) @ v => attention"))


def test_explain_says_why_not():
    qkv = [spec((3, H, "S", D)), spec((3, H, "T", D)), spec((3, H, "T", D))]
    why = _missed(lambda q, k, v, m: graphc.softmax(q[0] @ kT(k)[0] + m, axis=-1) @ v[0],
                  *qkv, spec((3, H, "S", "T")))
    assert "broadcasts the scores f32[8,S,T] up to f32[3,8,S,T]" in why
    why = _missed(lambda q, k, v, b, m: graphc.softmax(
        graphc.where(b, q @ kT(k) + m, -1e4), axis=-1) @ v,
        *qkv, spec((3, 1, 1, "T"), "bool"), spec((3, 1, "S", "T")))
    assert "a bool mask (%3) and an additive one (%4) together with the fill -10000 (attention" in why
    why = _missed(lambda q, k, v, b: graphc.softmax(graphc.where(
        b, q @ kT(k) + graphc.causal_mask(q.shape[2], k.shape[2]), -1e9), axis=-1) @ v,
        *qkv, spec((3, 1, 1, "T"), "bool"))
    assert "the causal mask is added inside where(mask, scores, -1e+09)" in why
    why = _missed(lambda q, k, v: graphc.softmax(graphc.tanh(q @ kT(k) / 2.0) * 3.0,
                                                 axis=-1) @ v, *qkv)
    assert "divides the scores by 2 and multiplies back by 3: no soft cap" in why
    why = _missed(lambda q, k, v: graphc.softmax(q @ kT(k), axis=-1) @ v,
                  spec((1, H, "S", D)), spec((3, H, "T", D)), spec((3, H, "T", D)))
    assert "does not broadcast to the batch dims [1,8] of q" in why
    why = _missed(lambda q, k, v, m: graphc.softmax(q @ kT(k) - m, axis=-1) @ v,
                  *qkv, spec((3, 1, 1, "T")))
    assert "expected add at %6, found sub" in why


# -- the op itself ----------------------------------------------------------------------
def test_op_checks_mask_and_kv_heads():
    q, k3 = spec((2, 4, "S", D)), spec((2, 3, "T", D))
    with pytest.raises(graphc.ShapeError, match="k f32\\[2,3,T,16\\] does not broadcast"):
        graphc.trace(lambda q, k: graphc.ops.attention(q, k, k), q, k3)
    k = spec((2, 2, "T", D))
    with pytest.raises(graphc.ShapeError, match="mask f32\\[2,4,S,S\\] does not broadcast"):
        graphc.trace(lambda q, k, m: graphc.ops.attention(q, k, k, m), q, k,
                     spec((2, 4, "S", "S")))
    with pytest.raises(graphc.DTypeError, match="the mask must be bool"):
        graphc.trace(lambda q, k, m: graphc.ops.attention(q, k, k, m), q, k,
                     spec((2, 1, 1, "T"), "int32"))


def test_op_reference_is_the_repeated_kv_softmax(rng):
    """The NumPy reference of the grouped, masked op equals attention over k / v repeated
    per head with the mask applied by hand."""
    q, k, v = randn(rng, (2, 4, 5, D)), randn(rng, (2, 2, 7, D)), randn(rng, (2, 2, 7, 3))
    m = keep(rng, (2, 1, 1, 7))
    got = graphc.ops.attention(q, k, v, m, scale=0.3, causal=True, mask_fill=-1e4)
    kk, vv = np.repeat(k, 2, axis=1).astype(np.float64), np.repeat(v, 2, axis=1)
    s = np.where(m, q.astype(np.float64) @ kk.transpose(0, 1, 3, 2) * 0.3, -1e4)
    s = np.where(np.arange(7)[None, :] > np.arange(5)[:, None] + 2, -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ vv
    assert np.abs(got - want).max() < 1e-5


def _left_padding(B, T, hidden=3):
    """-inf on the first ``hidden`` keys: a causal query among them sees only -inf."""
    m = np.zeros((B, 1, 1, T), np.float32)
    m[..., :hidden] = NEG
    return m


@pytest.mark.parametrize("inside", ["tril", "keep"])
def test_bool_mask_with_a_mask_inside_the_where_keeps_its_result(inside, backend, rng):
    """where(mask, s + m, finfo.min): where m hides every key the bool mask keeps (early
    causal queries under left padding), the graph gives those rows the fill's keys; the
    bool mask must not become the causal flag or an additive mask then (that would give
    NaN or other weights). Against the float64 reference, such rows included."""
    fmin = float(np.finfo(np.float32).min)

    def fn(q, k, v, m):
        B, S, T = q.shape[0], q.shape[2], k.shape[2]
        s = (_flat(q) @ _flat(k).transpose(0, 2, 1)).reshape(B, H, S, T)
        if inside == "tril":
            keep = graphc.constant(TRIL)[:, :, T - S:T, :T]
        else:
            keep = graphc.equal(graphc.causal_mask(S, T), 0.0)
        p = graphc.softmax(graphc.where(keep, s + m, fmin), axis=-1)
        return merge((_flat(p) @ _flat(v)).reshape(B, H, S, D))
    g = graphc.trace(fn, *_qkv_specs(H), spec(("B", 1, 1, "T")))
    exe = compile_for(g, backend)
    cases = []
    for B, S in ((2, 9), (1, 20)):
        cases.append((randn(rng, (B, H, S, D)), randn(rng, (B, H, S, D)),
                      randn(rng, (B, H, S, D)), _left_padding(B, S)))
    check_graph(g, cases, exe=exe)
