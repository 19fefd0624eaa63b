"""The numba attention: per block of query rows it skips the trailing keys a mask gives
weight exactly 0 (runtime.key_limits): masks written as tensors (a causal mask, padding,
Hugging Face's float32-minimum masks) must give what the float64 reference gives, rows
that some batch entry masks entirely included."""
import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.backends.numba_cpu.runtime import MASKED, key_limits
from numba_check import check_graph

S = 260                      # more than one 128-row block, S * T above KEY_LIMITS_MIN
NEG = float(np.finfo(np.float32).min)


def brute_limits(mask, is_bool, S, T):
    allowed = mask if is_bool else mask > MASKED
    a = np.broadcast_to(allowed, allowed.shape[:-2] + (S, T)).reshape(-1, S, T)
    out = []
    for r in range(S):
        if not a[:, r].any(axis=-1).all():
            out.append(T)
        else:
            out.append(max(int(np.nonzero(row)[0].max()) + 1 for row in a[:, r] if row.any()))
    return np.array(out)


@pytest.mark.parametrize("kind", ["causal", "padded", "keys only", "one row empty"])
def test_limits_match_brute_force(kind, rng):
    T = 37
    m = np.tril(np.ones((S, T), bool), k=T - S)[None, None].repeat(2, 0)
    if kind == "padded":
        m[0, :, :, 30:] = False
    elif kind == "keys only":
        m = np.ones((2, 1, 1, T), bool)
        m[1, ..., 20:] = False
    elif kind == "one row empty":
        m[1, 0, 5, :] = False
    add = np.where(m, rng.standard_normal(m.shape), -np.inf)
    for mask, is_bool in ((m, True), (add, False)):
        np.testing.assert_array_equal(key_limits(mask, is_bool, S, T),
                                      brute_limits(mask, is_bool, S, T))


def masks(rng):
    """Additive masks over [2, 1, S, S]: causal with float32's minimum (Hugging Face), a
    causal one with padded keys in one batch entry, one whose row 3 is masked entirely
    in one batch entry only, and a finite -1e4 mask (not MASKED: nothing skipped)."""
    causal = np.where(np.tril(np.ones((S, S), bool)), 0.0, NEG).astype(np.float32)
    causal = np.broadcast_to(causal, (2, 1, S, S)).copy()
    padded = causal.copy()
    padded[1, ..., 200:] = NEG
    empty = causal.copy()
    empty[0, 0, 3, :] = NEG
    finite = np.where(causal == 0, 0.0, -1e4).astype(np.float32)
    return [causal, padded, empty, finite]


def test_masked_attention_matches_the_reference(rng):
    g = graphc.trace(lambda q, k, v, m: graphc.ops.attention(q, k, v, m, scale=0.125),
                     spec((2, 3, "S", 16)), spec((2, 3, "S", 16)), spec((2, 3, "S", 16)),
                     spec((2, 1, "S", "S")))
    q, k, v = (rng.standard_normal((2, 3, S, 16)).astype(np.float32) for _ in range(3))
    check_graph(g, [(q, k, v, m) for m in masks(rng)])


def test_bool_mask_with_an_empty_row(rng):
    """A bool mask, -inf fill: a row no key of which is allowed comes out NaN in one batch
    entry (as the reference has it), and the causal rows of the other are right."""
    g = graphc.trace(lambda q, k, v, m: graphc.ops.attention(q, k, v, m, scale=0.25),
                     spec((2, 2, "S", 8)), spec((2, 2, "S", 8)), spec((2, 2, "S", 8)),
                     spec((2, 1, "S", "S"), "bool"))
    m = np.broadcast_to(np.tril(np.ones((S, S), bool)), (2, 1, S, S)).copy()
    m[0, 0, 7, :] = False
    q, k, v = (rng.standard_normal((2, 2, S, 8)).astype(np.float32) for _ in range(3))
    exe = graphc.compile(g, backend="numba")
    ref = graphc.compile(g, backend="reference", float64=True)
    got, want = exe(q, k, v, m), ref(q, k, v, m)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    err = np.linalg.norm(got[ok] - want[ok]) / np.linalg.norm(want[ok])
    assert err < 1e-5


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rows", ["padding", "own rows"])
def test_long_keys_one_head_at_a_time(causal, rows, rng):
    """T >= 1024: each thread takes its heads one at a time (HEAD_BLOCK_BYTES), here
    with grouped kv heads (4 query heads over 2) and a mask per batch entry shared by
    the heads: a padding mask over the keys, or one with its own query rows (an additive
    mask with float32's minimum past a random limit per row; its block is made key-major
    once for the heads, each head reading its batch entry's)."""
    T, Sq = 1100, 130
    R = 1 if rows == "padding" else "S"
    dtype = "bool" if rows == "padding" else "float32"
    g = graphc.trace(lambda q, k, v, m: graphc.ops.attention(q, k, v, m, scale=0.3,
                                                              causal=causal),
                     spec((2, 4, "S", 8)), spec((2, 2, "T", 8)), spec((2, 2, "T", 8)),
                     spec((2, 1, R, "T"), dtype))
    if rows == "padding":
        m = np.ones((2, 1, 1, T), bool)
        m[1, ..., 900:] = False
    else:
        ends = rng.integers(1, T, (2, 1, Sq, 1))
        m = np.where(np.arange(T) < ends, 0.0, NEG).astype(np.float32)
        m += rng.standard_normal(m.shape).astype(np.float32) * (m == 0)
    q = rng.standard_normal((2, 4, Sq, 8)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, T, 8)).astype(np.float32) for _ in range(2))
    check_graph(g, [(q, k, v, m)])
