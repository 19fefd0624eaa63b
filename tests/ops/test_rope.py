"""rope against NumPy computations written here from the formulas of ``transformers``:

- ``half`` (rotate-half / NeoX; Llama, Qwen2, Mistral, Phi-3): ``RotaryEmbedding.forward``
  (``freqs = position_ids[..., None] * inv_freq``, ``emb = cat(freqs, freqs)``, cos and sin
  times the attention scaling) and ``apply_rotary_pos_emb`` (``q * cos + rotate_half(q) *
  sin`` with ``cos.unsqueeze(1)``; partial rotary as Phi-3: ``cat(rotated q[..., :r],
  q[..., r:])``);
- ``interleaved``: GPT-J's ``rotate_every_two`` with ``repeat_interleave``d cos and sin, and
  DeepSeek-V2's form (de-interleave ``view(.., d/2, 2).transpose``, then rotate-half), whose
  output, re-interleaved, is what graphc's interleaved rope gives;
- the complex multiplication of the interleaved pairs.

On the reference backend (with the float64 oracle), then on numba and cupy-emu; and, with
the ``compare`` extra, against transformers' own ``LlamaRotaryEmbedding`` /
``apply_rotary_pos_emb`` and Phi-3's partial rotary."""
import warnings

import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.errors import LibraryFallbackWarning
from opcheck import (FLOATS, assert_matches, assert_reported_at, check, concrete, next_line,
                     randn, rel_err)


# -- independent implementations (float64) ----------------------------------------------

def _cos_sin(pos, inv_freq, scale, repeat, freq_dtype=np.float64):
    """transformers' tables: freqs [(B,) S, r/2] -> cos, sin [(B,) S, r], the halves
    concatenated (``repeat="cat"``) or each entry twice (``"interleave"``, GPT-J).
    ``freq_dtype`` float32 rounds freqs as transformers does (``position_ids.float() *
    inv_freq``); cos and sin are then taken in float64."""
    freqs = (pos.astype(freq_dtype)[..., None] * inv_freq.astype(freq_dtype)).astype(np.float64)
    emb = (np.concatenate([freqs, freqs], -1) if repeat == "cat"
           else np.repeat(freqs, 2, axis=-1))
    return np.cos(emb) * scale, np.sin(emb) * scale


def _unsqueeze(t, x, pos):
    """cos/sin against x [B, ..., S, r]: [S, r] broadcasts; [B, S, r] gets x's middle dims
    (``cos.unsqueeze(1)`` for x [B, H, S, D])."""
    if pos.ndim == 1:
        return t
    return t.reshape(t.shape[:1] + (1,) * (x.ndim - 3) + t.shape[1:])


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], -1)


def rotate_every_two(x):
    return np.stack([-x[..., 1::2], x[..., 0::2]], -1).reshape(x.shape)


def rope_hf(x, pos, inv_freq, scale=1.0, layout="interleaved", rotary_dim=None,
            freq_dtype=np.float64):
    """apply_rotary_pos_emb (half) or GPT-J's rotate_every_two (interleaved) on the first
    rotary_dim dims, the rest passed through."""
    r = x.shape[-1] if rotary_dim is None else rotary_dim
    cos, sin = _cos_sin(pos, inv_freq, scale, "cat" if layout == "half" else "interleave",
                        freq_dtype)
    cos, sin = _unsqueeze(cos, x, pos), _unsqueeze(sin, x, pos)
    xr = x[..., :r]
    rot = rotate_half(xr) if layout == "half" else rotate_every_two(xr)
    return np.concatenate([xr * cos + rot * sin, x[..., r:]], -1)


def rope_deepseek(x, pos, inv_freq, scale=1.0):
    """DeepSeek-V2's apply_rotary_pos_emb: de-interleave, rotate-half; re-interleaved."""
    d = x.shape[-1]
    q = x.reshape(x.shape[:-1] + (d // 2, 2)).swapaxes(-1, -2).reshape(x.shape)
    cos, sin = _cos_sin(pos, inv_freq, scale, "cat")
    cos, sin = _unsqueeze(cos, x, pos), _unsqueeze(sin, x, pos)
    out = q * cos + rotate_half(q) * sin
    return out.reshape(x.shape[:-1] + (2, d // 2)).swapaxes(-1, -2).reshape(x.shape)


def _rope_complex(x, pos, inv_freq, scale):
    """Pairs (x[2i], x[2i+1]) as complex numbers times scale * e^(i pos inv_freq_i)."""
    z = x[..., 0::2] + 1j * x[..., 1::2]
    rot = scale * np.exp(1j * np.outer(pos.astype(np.float64), inv_freq))
    w = z * rot
    out = np.empty(x.shape, np.float64)
    out[..., 0::2], out[..., 1::2] = w.real, w.imag
    return out


def _inv(r, dtype, base=10000.0):
    return (base ** (-np.arange(0, r, 2) / r)).astype(dtype)


# -- the reference backend ---------------------------------------------------------------

SHAPES = [(("S", 4), 1.0), ((3, "S", 8), 1.0), ((2, 3, "S", 2), 0.75), (("S", 32), 1.3)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,scale", SHAPES, ids=str)
def test_rope_matches_complex_rotation(shape, scale, dtype, rng):
    d = shape[-1]
    inv = _inv(d, dtype)
    cases = []
    for n in (1, 6):
        x = randn(rng, concrete(shape, {"S": n}), dtype)
        pos = rng.permutation(50)[:n].astype(np.int64)       # any positions, any order
        cases.append((x, pos))
    check(lambda x, p: graphc.rope(x, p, inv, scale=scale),
          [spec(shape, dtype), spec(("S",), "int64")], cases,
          lambda x, p: _rope_complex(x, p, inv.astype(np.float64), scale))


# (x shape, positions shape, rotary_dim): shared and per-sequence positions, [B, S, D]
# and [B, H, S, D], [1, S] broadcast over B, full and partial rotary (odd D included)
CASES = [((2, 3, "S", 8), ("S",), None), ((2, 3, "S", 8), (2, "S"), None),
         ((2, "S", 6), (2, "S"), 4), ((3, 2, "S", 10), (1, "S"), 6),
         (("S", 7), ("S",), 4), ((2, 1, "S", 5), (2, "S"), 4)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("xs,ps,rotary_dim", CASES, ids=str)
def test_rope_matches_transformers_formulas(xs, ps, rotary_dim, layout, dtype, rng):
    r = xs[-1] if rotary_dim is None else rotary_dim
    inv = _inv(r, dtype)
    cases = []
    for n in (1, 5):
        x = randn(rng, concrete(xs, {"S": n}), dtype)
        pos = rng.integers(0, 200, concrete(ps, {"S": n})).astype(np.int64)
        cases.append((x, pos))
    check(lambda x, p: graphc.rope(x, p, inv, scale=1.1, layout=layout,
                                   rotary_dim=rotary_dim),
          [spec(xs, dtype), spec(ps, "int64")], cases,
          lambda x, p: rope_hf(x, p, inv.astype(np.float64), 1.1, layout, rotary_dim))


@pytest.mark.parametrize("ps", [("S",), (2, "S")], ids=str)
def test_interleaved_is_deepseek_v2_rotation_reinterleaved(ps, rng):
    inv = _inv(8, "float64")
    x = randn(rng, (2, 3, 5, 8), "float64")
    pos = rng.integers(0, 100, concrete(ps, {"S": 5}))
    got = graphc.rope(x, pos, inv, scale=0.9)
    np.testing.assert_allclose(got, rope_deepseek(x, pos, inv, 0.9), rtol=0, atol=1e-12)
    # the same rotation in both layouts up to the order of the dims
    perm = np.concatenate([np.arange(0, 8, 2), np.arange(1, 8, 2)])
    half = graphc.rope(x[..., perm], pos, inv, scale=0.9, layout="half")
    np.testing.assert_allclose(half, got[..., perm], rtol=0, atol=1e-12)


def test_rope_position_zero_is_identity_and_norm_preserved(rng):
    x = randn(rng, (5, 16), "float64")
    inv = rng.uniform(0.01, 1.0, 8)
    np.testing.assert_array_equal(graphc.rope(x, np.zeros(5, np.int64), inv), x)
    y = graphc.rope(x, np.arange(5), inv)
    # A rotation keeps the length of every pair.
    np.testing.assert_allclose(np.hypot(y[:, 0::2], y[:, 1::2]),
                               np.hypot(x[:, 0::2], x[:, 1::2]), rtol=1e-12)
    # dims past rotary_dim pass through exactly
    z = graphc.rope(x, np.arange(5), inv[:3], rotary_dim=6, layout="half")
    np.testing.assert_array_equal(z[:, 6:], x[:, 6:])


def test_rope_attrs_are_canonical():
    g = graphc.trace(lambda x, p: graphc.rope(x, p, np.ones(4, np.float32)),
                     spec(("S", 8)), spec(("S",), "int64"))
    (node,) = [n for n in g.nodes.values() if n.op == "rope"]
    assert node.attrs == {"scale": 1.0, "layout": "interleaved", "rotary_dim": 8}


# -- numba and cupy-emu: every combination natively ---------------------------------------

@pytest.mark.parametrize("backend", ["numba", "cupy-emu"])
@pytest.mark.parametrize("dtype,pos_dtype", [("float32", "int64"), ("float64", "int32")])
def test_rope_compiled_every_combination(backend, dtype, pos_dtype, rng):
    """One graph with every (layout, positions, rotary_dim) of CASES, on the backend's
    native kernel (a fallback warning fails), against the transformers formulas."""
    combos = [(xs, ps, r, lay) for xs, ps, r in CASES for lay in ("interleaved", "half")]
    invs = [_inv(xs[-1] if r is None else r, dtype) for xs, _, r, _ in combos]
    specs = [s for xs, ps, _, _ in combos for s in (spec(xs, dtype), spec(ps, pos_dtype))]

    def fn(*a):
        return tuple(graphc.rope(a[2 * k], a[2 * k + 1], inv, scale=1.2, layout=lay,
                                 rotary_dim=r)
                     for k, ((_, _, r, lay), inv) in enumerate(zip(combos, invs)))
    g = graphc.trace(fn, *specs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LibraryFallbackWarning)
        exe = graphc.compile(g, backend=backend)
    for n in (1, 7, 0):
        arrays = []
        for xs, ps, _, _ in combos:
            arrays += [randn(rng, concrete(xs, {"S": n}), dtype),
                       rng.integers(0, 3000, concrete(ps, {"S": n})).astype(pos_dtype)]
        outs = exe(*arrays)
        for k, ((xs, ps, r, lay), inv) in enumerate(zip(combos, invs)):
            x, p = arrays[2 * k], arrays[2 * k + 1]
            # the angle (up to 3000 rad) rounded in the dtype of x, as transformers does
            want = rope_hf(x.astype(np.float64), p, inv, 1.2, lay, r, freq_dtype=dtype)
            assert_matches(outs[k], want, dtype)


# -- errors ---------------------------------------------------------------------------------

def test_rope_errors_name_the_line():
    inv = np.ones(2, np.float32)

    def odd(x, p):
        return graphc.rope(x, p, np.ones(3, np.float32))
    with pytest.raises(graphc.ShapeError, match="even") as e:
        graphc.trace(odd, spec(("S", 5)), spec(("S",), "int64"))
    assert_reported_at(e.value, f"{odd.__code__.co_filename}:{odd.__code__.co_firstlineno + 1}",
                       "rope")

    def wrong_pos(x, p):
        return graphc.rope(x, p, inv)
    with pytest.raises(graphc.ShapeError, match="positions"):
        graphc.trace(wrong_pos, spec(("S", 4)), spec(("T",), "int64"))
    with pytest.raises(graphc.DTypeError, match="positions"):
        graphc.trace(wrong_pos, spec(("S", 4)), spec(("S",), "float32"))
    with pytest.raises(graphc.ShapeError, match="inv_freq"):
        graphc.trace(lambda x, p: graphc.rope(x, p, np.ones(4, np.float32)),
                     spec(("S", 4)), spec(("S",), "int64"))
    with pytest.raises(graphc.DTypeError):
        graphc.trace(lambda x, p: graphc.rope(x, p, np.ones(2, np.float64)),
                     spec(("S", 4)), spec(("S",), "int64"))
    with pytest.raises(graphc.AttrError, match="scale") as e:
        at = next_line()
        graphc.trace(lambda x, p: graphc.rope(x, p, inv, scale="big"), spec(("S", 4)), spec(("S",), "int64"))  # noqa: E501
    assert_reported_at(e.value, at, "rope")


@pytest.mark.parametrize("xs,ps,inv_n,attrs,err,match", [
    # per-sequence positions: B must be x's first dim (or 1), S its second-to-last
    ((2, 3, "S", 8), (3, "S"), 4, {}, graphc.ShapeError, r"\[B, S\].*B = 2"),
    ((2, 3, "S", 8), (2, "T"), 4, {}, graphc.ShapeError, r"S = S"),
    (("S", 8), (1, "S"), 4, {}, graphc.ShapeError, r"rank >= 3"),
    ((2, "S", 8), (2, 1, "S"), 4, {}, graphc.ShapeError, r"\[S\] or \[B, S\]"),
    # rotary_dim: even, positive, <= D, inv_freq [rotary_dim/2]
    (("S", 8), ("S",), 2, {"rotary_dim": 5}, graphc.AttrError, "even"),
    (("S", 8), ("S",), 5, {"rotary_dim": 10}, graphc.AttrError, "larger than the last dim 8"),
    (("S", 8), ("S",), 0, {"rotary_dim": 0}, graphc.AttrError, "positive"),
    (("S", 8), ("S",), 4, {"rotary_dim": 4}, graphc.ShapeError,
     r"rotary_dim/2\] = \[2\].*rotary_dim 4"),
    (("S", 8), ("S",), 2, {"rotary_dim": 4.0}, graphc.AttrError, "must be an int"),
    (("S", 8), ("S",), 4, {"layout": "neox"}, graphc.AttrError, "layout must be one of"),
], ids=str)
def test_rope_misuse_is_a_clear_error(xs, ps, inv_n, attrs, err, match):
    inv = np.ones(inv_n, np.float32)
    with pytest.raises(err, match=match) as e:
        at = next_line()
        graphc.trace(lambda x, p: graphc.rope(x, p, inv, **attrs), spec(xs), spec(ps, "int64"))
    assert_reported_at(e.value, at, "rope")


# -- transformers itself (the compare extra) -------------------------------------------------

def _torch_transformers():
    torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
    pytest.importorskip("transformers", minversion="5.15",
                        reason="needs the 'compare' extra (transformers >= 5.15)")
    return torch


@pytest.mark.compare
@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_rope_matches_transformers_llama(backend, rng):
    """LlamaRotaryEmbedding + apply_rotary_pos_emb on q, k [B, H, S, D] with left-padded
    per-sequence position_ids [B, S]: rope(layout="half") with the module's inv_freq."""
    torch = _torch_transformers()
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import (LlamaRotaryEmbedding,
                                                          apply_rotary_pos_emb)
    B, H, S, D = 3, 2, 6, 16
    cfg = LlamaConfig(hidden_size=H * D, num_attention_heads=H, max_position_embeddings=64,
                      rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    emb = LlamaRotaryEmbedding(cfg)
    q = randn(rng, (B, H, S, D), "float32")
    k = randn(rng, (B, H, S, D), "float32")
    pos = np.maximum(np.arange(S)[None, :] - np.array([[0], [2], [5]]), 0)   # left padding
    with torch.no_grad():
        cos, sin = emb(torch.from_numpy(q), torch.from_numpy(pos))
        want_q, want_k = (t.numpy() for t in apply_rotary_pos_emb(
            torch.from_numpy(q), torch.from_numpy(k), cos, sin))
    inv = emb.inv_freq.numpy()
    g = graphc.trace(lambda q, k, p: (graphc.rope(q, p, inv, layout="half",
                                                  scale=emb.attention_scaling),
                                      graphc.rope(k, p, inv, layout="half",
                                                  scale=emb.attention_scaling)),
                     spec(("B", H, "S", D)), spec(("B", H, "S", D)), spec(("B", "S"), "int64"))
    got_q, got_k = graphc.compile(g, backend=backend)(q, k, pos)
    assert rel_err(got_q, want_q) < 1e-6 and rel_err(got_k, want_k) < 1e-6
    # and both against the float64 formulas (transformers' float32 angle)
    for got, x in ((got_q, q), (got_k, k)):
        want = rope_hf(x.astype(np.float64), pos, inv, emb.attention_scaling, "half",
                       freq_dtype=np.float32)
        assert_matches(got, want, "float32")


@pytest.mark.compare
def test_rope_matches_transformers_phi3_partial_rotary(rng):
    """Phi-3's partial_rotary_factor: rotary_dim = D * factor, the rest passed through."""
    torch = _torch_transformers()
    from transformers import Phi3Config
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding, apply_rotary_pos_emb
    B, H, S, D = 2, 2, 5, 16
    cfg = Phi3Config(hidden_size=H * D, num_attention_heads=H, num_key_value_heads=H,
                     max_position_embeddings=64, pad_token_id=0,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                      "partial_rotary_factor": 0.75})
    emb = Phi3RotaryEmbedding(cfg)
    inv = emb.inv_freq.numpy()
    assert inv.shape == (6,)                                    # rotary_dim 12 of 16
    q = randn(rng, (B, H, S, D), "float32")
    pos = np.stack([np.arange(S), np.arange(S) + 7])
    with torch.no_grad():
        cos, sin = emb(torch.from_numpy(q), torch.from_numpy(pos))
        want, _ = apply_rotary_pos_emb(torch.from_numpy(q), torch.from_numpy(q), cos, sin)
    got = graphc.rope(q, pos, inv, layout="half", rotary_dim=12, scale=emb.attention_scaling)
    assert rel_err(got, want.numpy()) < 1e-6
    np.testing.assert_array_equal(got[..., 12:], q[..., 12:])


@pytest.mark.compare
@pytest.mark.parametrize("backend", ["reference", "numba", "cupy-emu"])
def test_rope_matches_transformers_gptj_interleaved_partial(backend, rng):
    """GPT-J's rotary_dim (interleaved pairs, rotate_every_two) on k [B, S, H, D] with
    per-sequence positions: its sin/cos table gathered by position_ids, as GPTJAttention
    does; graphc's rope on the [B, H, S, D] transpose with layout="interleaved"."""
    torch = _torch_transformers()
    from transformers.models.gptj.modeling_gptj import (apply_rotary_pos_emb,
                                                        create_sinusoidal_positions)
    B, S, H, D, r = 2, 7, 3, 16, 10
    k = randn(rng, (B, S, H, D), "float32")
    pos = np.stack([rng.permutation(40)[:S], np.arange(S) + 3])            # any positions
    with torch.no_grad():
        table = create_sinusoidal_positions(64, r)                        # [64, r]
        sincos = table[torch.from_numpy(pos)]                              # [B, S, r]
        sin, cos = torch.split(sincos, r // 2, dim=-1)
        kt = torch.from_numpy(k)
        want = torch.cat([apply_rotary_pos_emb(kt[..., :r], sin, cos), kt[..., r:]], -1)
        inv = (1.0 / (10000 ** (torch.arange(0, r, 2, dtype=torch.int64) / r))).numpy()
    g = graphc.trace(lambda k, p: graphc.rope(k.transpose(0, 2, 1, 3), p, inv,
                                              rotary_dim=r).transpose(0, 2, 1, 3),
                     spec(("B", "S", H, D)), spec(("B", "S"), "int64"))
    got = graphc.compile(g, backend=backend)(k, pos)
    assert rel_err(got, want.numpy()) < 1e-6
    wide = rope_hf(k.transpose(0, 2, 1, 3).astype(np.float64), pos, inv, 1.0, "interleaved", r,
                   freq_dtype=np.float32).transpose(0, 2, 1, 3)
    assert_matches(got, wide, "float32")
