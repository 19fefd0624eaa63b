"""Batched generation for DeepSeek-V2 (issue 17, item 4): ``generate`` with a list of
prompts of different lengths runs one batched decode step for all of them, and makes the
tokens each prompt makes alone; the batched step itself against the one-sequence step."""
from collections import Counter

import numpy as np
import pytest

import graphc
from graphc.models import deepseek_v2 as dv

LENGTHS = (1, 5, 17)          # 17: a bucket of 32 slots, which it outgrows while decoding


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def prompts(cfg, seed, lengths=LENGTHS):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, cfg.vocab_size, n) for n in lengths]


def check_against_alone(model, ps, n_new, backend, **options):
    out = model.generate(ps, n_new, backend=backend, return_logits=True, **options)
    assert isinstance(out, list) and len(out) == len(ps)
    tol = 1e-10 if options.get("float64") else 1e-5
    for p, (ids, logits) in zip(ps, out):
        want_ids, want_logits = model.generate(p, n_new, backend=backend, return_logits=True,
                                               **options)
        assert ids.dtype == np.int64 and np.array_equal(ids[:len(p)], p)
        assert ids.tolist() == want_ids.tolist()                   # token for token
        assert logits.shape == want_logits.shape == (n_new, model.config.vocab_size)
        assert rel(logits, want_logits) < tol, (len(p), rel(logits, want_logits))
        assert (np.argmax(logits, axis=-1) == ids[len(p):]).all()  # greedy
    return out


@pytest.mark.parametrize("float64", [False, True])
def test_batched_generate_matches_each_prompt_alone_reference(float64):
    cfg = dv.preset("tiny")
    model = dv.random(cfg, seed=21)
    n_new = 20                                     # 17 + 20 > 32: the buffers grow
    ps = prompts(cfg, seed=int(np.random.default_rng().integers(1 << 30)))
    check_against_alone(model, ps, n_new, "reference", float64=float64)
    # and against the full causal forward (float64) at every step of one sequence
    ids, logits = model.generate(ps[1:2], 6, return_logits=True)[0]
    full = model.forward(ids[:-1], float64=True)
    assert rel(logits, full[len(ps[1]) - 1:]) < 1e-5


@pytest.mark.slow       # compiles prefill, decode and the batched decode on numba (~30 s)
def test_batched_generate_matches_each_prompt_alone_numba():
    cfg = dv.preset("tiny")
    model = dv.random(cfg, seed=22)
    ps = prompts(cfg, seed=int(np.random.default_rng().integers(1 << 30)))
    model.compile("numba", ("prefill", "decode", "decode_batched"))
    out = check_against_alone(model, ps, 20, "numba")
    ref = model.generate(ps, 20, backend="reference")
    assert [o[0].tolist() for o in out] == [r.tolist() for r in ref]


def step_inputs(cfg, rng, B, T, filled):
    """Random inputs of the batched decode step: per row, ``filled[b]`` cache slots hold
    tokens, the others random garbage (masked)."""
    ids = rng.integers(0, cfg.vocab_size, B)
    cache = []
    for _ in range(cfg.num_hidden_layers):
        cache.append(rng.standard_normal((B, T, cfg.kv_lora_rank)).astype(cfg.dtype))
        cache.append(rng.standard_normal((B, T, cfg.qk_rope_head_dim)).astype(cfg.dtype))
    pos = np.array(filled, np.int64)
    mask = np.where(np.arange(T)[None] < pos[:, None], 0, -np.inf).astype(cfg.dtype)
    return ids, cache, pos, mask


def test_batched_step_rows_are_the_one_sequence_step():
    """Each row of the batched step is the padded one-sequence step on that row's cache,
    position and mask; what a masked slot holds changes nothing."""
    cfg = dv.preset("tiny")
    model = dv.random(cfg, seed=23)
    rng = np.random.default_rng()
    step = model.compiled("decode_batched")
    one = model.compiled("decode")
    for B, T in ((1, 16), (4, 32)):
        filled = rng.integers(1, T + 1, B)
        ids, cache, pos, mask = step_inputs(cfg, rng, B, T, filled)
        res = step(ids, *cache, pos, mask)
        assert res[0].shape == (B, cfg.vocab_size)
        assert [r.shape for r in res[1:]] == [(B, c.shape[2]) for c in cache]
        for b in range(B):
            want = one(ids[b:b + 1], *(c[b] for c in cache), pos[b:b + 1], mask[b])
            for got, w in zip(res, want):
                assert rel(got[b], w[0]) < 1e-5
        # garbage (large, finite) in the masked slots: the same outputs, exactly
        junk = [c.copy() for c in cache]
        for c in junk:
            c[mask == -np.inf] = rng.uniform(-1e3, 1e3, c[mask == -np.inf].shape)
        if (mask == -np.inf).any():
            for got, w in zip(step(ids, *junk, pos, mask), res):
                np.testing.assert_array_equal(got, w)


def test_batched_step_graph_is_symbolic_and_fuses_like_the_one_sequence_step():
    cfg = dv.preset("tiny")
    model = dv.random(cfg, seed=24)
    g = model.trace_decode_batched()
    shapes = [tuple(str(d) for d in t.shape) for t in g.input_types]
    dc, dr = str(cfg.kv_lora_rank), str(cfg.qk_rope_head_dim)
    assert shapes == [("B",)] + [("B", "T", dc), ("B", "T", dr)] * cfg.num_hidden_layers \
        + [("B",), ("B", "T")]
    out = [tuple(str(d) for d in g.nodes[o].type.shape) for o in g.outputs]
    assert out[0] == ("B", str(cfg.vocab_size))
    # absorbed weights: no per-head key or value over the cache, kv_b_proj unused
    nh, dn, dv_ = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim
    for node in g.nodes.values():
        shape = node.type.shape
        over_cache = any("T" in str(d) for d in shape)
        assert not (over_cache and nh in shape and shape[-1] in (dn, dv_, dn + dv_)), \
            f"{node.name} {node.op} {node.type} looks like per-head keys or values"
    used = {i for n in g.nodes.values() for i in n.inputs}
    kv_b = [n.id for n in g.nodes.values() if n.op == "constant"
            and "kv_b_proj" in (n.attrs.get("name") or "")]
    assert kv_b and not used & set(kv_b)
    # one row per sequence through every linear, norm and the MoE (not a loop over B)
    assert all(str(n.type.shape[0]) == "B" for n in g.nodes.values() if n.op == "moe")
    kinds = [[n.attrs.get("kind") for n in graphc.optimize(t, "O2").nodes.values()
              if n.op == "fused"] for t in (g, model.trace_decode(padded=True))]
    assert Counter(kinds[0]) == Counter(kinds[1])
    # one compile for every batch size and bucket
    model.generate([[1, 2], [3]], 3)
    model.generate([[4, 5, 6]] * 3 + [[7] * 20], 2)
    assert sum(1 for k in model._compiled if k[0] == "decode_batched") == 1


def test_eos_stops_one_sequence_and_the_others_go_on():
    cfg = dv.preset("tiny")
    model = dv.random(cfg, seed=25)
    ps = prompts(cfg, seed=int(np.random.default_rng().integers(1 << 30)))
    n_new = 8
    alone = [model.generate(p, n_new)[len(p):].tolist() for p in ps]
    # an eos that one sequence makes early and another never makes
    eos = next((t for t in alone[0][:n_new - 2]
                if any(t not in a for a in alone[1:])), None)
    if eos is None:
        pytest.skip("the random prompts gave no token that stops one sequence only")

    def stopped(new, eos):
        return new[:new.index(eos) + 1] if eos in new else new
    out = model.generate(ps, n_new, eos_token_id=eos, return_logits=True)
    lengths = []
    for p, new, (ids, logits) in zip(ps, alone, out):
        want = stopped(new, eos)
        assert ids[len(p):].tolist() == want
        assert logits.shape == (len(want), cfg.vocab_size)
        lengths.append(len(want))
    assert min(lengths) < n_new and max(lengths) == n_new       # one stopped, one went on
    # each sequence's own first token as eos: that one stops at once, each other one
    # where it makes that token alone
    for eos in {a[0] for a in alone}:
        got = model.generate(ps, n_new, eos_token_id=eos)
        assert [g.tolist() for g in got] == [p.tolist() + stopped(a, eos)
                                             for p, a in zip(ps, alone)]


def test_bad_batches_raise_input_error():
    cfg = dv.preset("tiny")
    model = dv.random(cfg, seed=26)
    with pytest.raises(graphc.InputError, match="empty list"):
        model.generate([], 3)
    with pytest.raises(graphc.InputError, match="prompt 1 of prompt_ids"):
        model.generate([[1, 2], [[3, 4]]], 3)
    with pytest.raises(graphc.InputError, match="prompt 2 of prompt_ids"):
        model.generate([[1], [2, 3], []], 3)
    with pytest.raises(graphc.InputError, match="prompt 0 of prompt_ids.*integer"):
        model.generate([np.array([0.5, 1.0]), [1]], 3)
    with pytest.raises(graphc.InputError, match="prompt 1 of prompt_ids"):
        model.generate([[1, 2], 3], 3)                            # a scalar among prompts
    limit = cfg.max_position_embeddings
    with pytest.raises(graphc.InputError,
                       match=rf"prompt 1 of prompt_ids \(10 tokens\).*exceeds "
                             rf"max_position_embeddings {limit}"):
        model.generate([[1] * 3, [2] * 10], limit - 9)
    with pytest.raises(graphc.InputError, match="prompt_ids"):     # a 2-D array: refused
        model.generate(np.zeros((2, 2), np.int64), 3)
    # a list of ints is still one prompt, with today's return type
    one = model.generate([3, 1, 4], 2)
    assert isinstance(one, np.ndarray) and one.shape == (5,)
    # nothing to make: the prompts back (and empty logits)
    out = model.generate([[1, 2], [3]], 0, return_logits=True)
    assert [o[0].tolist() for o in out] == [[1, 2], [3]]
    assert [o[1].shape for o in out] == [(0, cfg.vocab_size)] * 2
