"""DeepSeek-V2 on the reference backend (no torch needed): against the independent NumPy
model in deepseek_numpy.py, O2 against the float64 O0 oracle, the absorbed decode against
the full forward, the config and the cache arithmetic."""
import numpy as np
import pytest

import graphc
from graphc.models import deepseek_v2 as dv

from deepseek_numpy import deepseek_logits, yarn

VARIANTS = {
    "tiny": {},
    "no_q_lora": dict(q_lora_rank=None),
    "greedy_no_yarn": dict(topk_method="greedy", n_group=1, topk_group=1, rope_scaling=None,
                           routed_scaling_factor=1.0),
    "norm_topk_prob": dict(norm_topk_prob=True, num_experts_per_tok=4),
    "moe_every_2nd_no_dense": dict(num_hidden_layers=3, first_k_dense_replace=0,
                                   moe_layer_freq=2),
    "tied_k1_mscale": dict(tie_word_embeddings=True, num_experts_per_tok=1,
                           n_shared_experts=0, norm_topk_prob=True,
                           rope_scaling=dict(type="yarn", factor=8.0,
                                             original_max_position_embeddings=16,
                                             beta_fast=32.0, beta_slow=1.0, mscale=1.0,
                                             mscale_all_dim=0.5)),
}


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_model_matches_numpy(name):
    cfg = dv.preset("tiny", **VARIANTS[name])
    model = dv.random(cfg, seed=11)
    g = model.trace()
    exe = graphc.compile(g, backend="reference")                   # O2
    oracle = graphc.compile(g, backend="reference", float64=True)  # O0, float64
    rng = np.random.default_rng(5)
    for S in (1, 9):
        ids = rng.integers(0, cfg.vocab_size, S)
        want = deepseek_logits(model.params, cfg, ids, inv_freq=model.inv_freq)
        out = exe(ids)
        assert out.dtype == np.float32 and out.shape == (S, cfg.vocab_size)
        assert rel(out, want) < 1e-5
        out64 = oracle(ids)
        assert out64.dtype == np.float64
        assert rel(out64, want) < 1e-10
        assert rel(out, out64) < 1e-5


def test_graph_uses_the_new_ops_and_attention_fuses():
    model = dv.random(dv.preset("tiny"), seed=0)
    counts = model.trace().op_counts()
    c = model.config
    assert counts["rope"] == 2 * c.num_hidden_layers            # q_pe and k_pe per layer
    assert counts["moe"] == 1 and counts["causal_mask"] == c.num_hidden_layers
    explain = graphc.passes.Explain()
    opt = graphc.optimize(model.trace(), "O2", [explain])
    groups = [n.attrs["kind"] for n in opt.nodes.values() if n.op == "fused"]
    assert groups.count("attention") == c.num_hidden_layers   # the attention rule fired


@pytest.mark.parametrize("float64", [False, True])
def test_absorbed_decode_matches_full_forward(float64):
    cfg = dv.preset("tiny", num_hidden_layers=3)
    model = dv.random(cfg, seed=3)
    prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, 6)
    n = 7
    ids, step_logits = model.generate(prompt, n, return_logits=True, float64=float64)
    assert ids.shape == (6 + n,) and np.array_equal(ids[:6], prompt)
    assert step_logits.shape == (n, cfg.vocab_size)
    full = model.forward(ids[:-1], float64=True)                   # one full causal pass
    for k in range(n):
        want = full[5 + k]
        assert rel(step_logits[k], want) < (1e-10 if float64 else 1e-5), k
        assert ids[6 + k] == np.argmax(step_logits[k])             # greedy


def test_compile_makes_the_executables_once():
    model = dv.random(dv.preset("tiny"), seed=6)
    fwd, pre, dec = model.compile()
    assert model.compiled("forward") is fwd and model.compiled("decode") is dec
    assert model.compile("reference", ("prefill",)) == [pre]
    assert model.compile("reference", "decode") == [dec]
    with pytest.raises(graphc.InputError, match="no executable 'backward'"):
        model.compile("reference", ("backward",))


def test_decode_inputs_are_generate_first_step():
    """decode_inputs(prompt) feeds the decode executable what generate's first decode
    step gets: same logits as generate's second new token, same as the full forward."""
    cfg = dv.preset("tiny", num_hidden_layers=2)
    model = dv.random(cfg, seed=5)
    prompt = np.random.default_rng(2).integers(0, cfg.vocab_size, 9)
    ids, step_logits = model.generate(prompt, 2, return_logits=True)
    inputs = model.decode_inputs(prompt)
    assert inputs[0].tolist() == [ids[9]] and inputs[-2].tolist() == [9]
    assert inputs[-1].shape == inputs[1].shape[:1] and np.isinf(inputs[-1][9:]).all()
    logits = model.compiled("decode")(*inputs)[0][0]
    assert rel(logits, step_logits[1]) < 1e-6
    assert rel(logits, model.forward(ids[:10], float64=True)[9]) < 1e-5
    too_long = np.zeros(cfg.max_position_embeddings, np.int64)
    with pytest.raises(graphc.InputError, match="no position for a new one"):
        model.decode_inputs(too_long)


@pytest.mark.slow       # compiles the two-layer prefill graph on numba (~45 CPU s)
def test_generate_prefill_runs_the_last_layer_for_the_last_token_only():
    cfg = dv.preset("tiny", num_hidden_layers=2, first_k_dense_replace=1)
    model = dv.random(cfg, seed=4)
    g = model.trace(with_cache=True)
    types = [g.nodes[o].type for o in g.outputs]
    assert types[0].shape == (1, cfg.vocab_size)                   # next-token logits only
    assert all(str(t.shape[0]) == "S" for t in types[1:])          # the cache: every token
    scores = [[str(d) for d in n.type.shape] for n in g.nodes.values() if n.op == "softmax"
              and len(n.type.shape) == 3]
    nh = str(cfg.num_attention_heads)
    assert scores == [[nh, "S", "S"], [nh, "1", "S"]]      # the last layer: one query row
    assert [n.type.shape for n in g.nodes.values() if n.op == "moe"] == [(1, cfg.hidden_size)]
    # its logits and cache against the independent NumPy model, on a compiling backend,
    # prompts of 1 and 11 tokens
    for S in (1, 11):
        ids = np.random.default_rng(8).integers(0, cfg.vocab_size, S)
        out = model.compiled("prefill", "numba")(ids)
        latents = []
        want = deepseek_logits(model.params, cfg, ids, inv_freq=model.inv_freq,
                               latents=latents)
        assert out[0].shape == (1, cfg.vocab_size)
        assert rel(out[0][0], want[-1]) < 1e-5
        assert len(out) - 1 == len(latents) == 2 * cfg.num_hidden_layers
        for a, b in zip(out[1:], latents):
            assert a.shape == b.shape == (S, b.shape[1]) and rel(a, b) < 1e-5


def test_decode_graph_never_materialises_keys_or_values():
    cfg = dv.preset("tiny")
    model = dv.random(cfg, seed=0)
    g = model.trace_decode()
    assert all(str(t.shape[0]) == "T" for t in g.input_types[1:])
    nh, dn, dv_ = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim
    for node in g.nodes.values():
        shape = node.type.shape
        per_token = any(not isinstance(d, int) for d in shape)      # a dim over cache length
        assert not (per_token and nh in shape and shape[-1] in (dn, dv_, dn + dv_)), \
            f"{node.name} {node.op} {node.type} looks like per-head keys or values"
    used = {i for n in g.nodes.values() for i in n.inputs}
    kv_b = [n.id for n in g.nodes.values() if n.op == "constant"
            and "kv_b_proj" in (n.attrs.get("name") or "")]
    assert kv_b and not used & set(kv_b)           # W_UK / W_UV are used, kv_b_proj is not
    # generate compiles the decode step once, whatever the number of steps
    model.generate([1, 2, 3], 5)
    model.generate([4, 5], 3)
    assert sum(1 for k in model._compiled if k[0] == "decode") == 1


def test_generate_stops_at_eos_and_checks_input():
    model = dv.random(dv.preset("tiny"), seed=2)
    ids = model.generate([3, 1, 4], 6)
    first = int(ids[3])
    stopped = model.generate([3, 1, 4], 6, eos_token_id=first)
    assert stopped.tolist() == [3, 1, 4, first]
    with pytest.raises(graphc.InputError, match="prompt_ids"):
        model.generate(np.zeros((2, 2), np.int64), 3)
    with pytest.raises(graphc.InputError, match="max_position_embeddings"):
        model.generate([1], model.config.max_position_embeddings)
    with pytest.raises(graphc.GraphcError, match="embedding.*out of range") as e:
        model.forward([1, model.config.vocab_size])
    assert "deepseek_v2.py" in str(e.value)                       # the model's line


def test_yarn_tables_match_the_formulas():
    for cfg in [dv.preset("mini"), dv.preset("v2")] + [dv.preset("tiny", **v)
                                                       for v in VARIANTS.values()]:
        inv, cs, sm = dv.rope_tables(cfg)
        want_inv, want_cs, want_sm = yarn(cfg)
        np.testing.assert_allclose(inv, want_inv, rtol=1e-14)
        # the model keeps them in float32, rounded once
        np.testing.assert_allclose(dv.DeepseekV2(cfg, {}).inv_freq, want_inv, rtol=6e-8)
        assert cs == pytest.approx(want_cs) and sm == pytest.approx(want_sm)
    # the released V2 softmax scale quoted in DEEPSEEK_V2.md: 192^-0.5 * 1.2608^2
    assert dv.DeepseekV2(dv.preset("tiny", qk_nope_head_dim=128, qk_rope_head_dim=64,
                                   rope_scaling=dv.preset("v2").rope_scaling), {}) \
        .softmax_scale == pytest.approx(0.114721, abs=2e-6)


def test_cache_bytes_per_token():
    v2 = dv.cache_bytes_per_token(dv.preset("v2"))
    assert v2["mla"] == 60 * (512 + 64) * 4                          # 576 numbers per layer
    assert v2["mha"] == 60 * 2 * 128 * 128 * 4
    assert round(v2["ratio"]) == 57
    mini = dv.random(dv.preset("tiny"), 0).cache_bytes_per_token()
    assert mini["mla"] == 2 * (16 + 4) * 4


def test_config_from_hf_both_rope_spellings_and_errors():
    base = dict(model_type="deepseek_v2", vocab_size=97, hidden_size=32, q_lora_rank=None,
                n_group=None, topk_group=None, topk_method="greedy")
    yarn_d = dict(factor=4.0, original_max_position_embeddings=32, beta_fast=32,
                  beta_slow=1, mscale=0.707, mscale_all_dim=0.707)
    v4 = dv.DeepseekV2Config.from_hf({**base, "rope_theta": 500.0,
                                      "rope_scaling": {"type": "yarn", **yarn_d}})
    v5 = dv.DeepseekV2Config.from_hf({**base, "rope_parameters": {
        "rope_type": "yarn", "rope_theta": 500.0, **yarn_d}})
    assert v4 == v5 and v4.rope_theta == 500.0 and v4.q_lora_rank is None
    assert v4.rope_scaling["factor"] == 4.0 and v4.n_group == 1
    plain = dv.DeepseekV2Config.from_hf({**base, "rope_parameters": {
        "rope_type": "default", "rope_theta": 10000.0}})
    assert plain.rope_scaling is None
    with pytest.raises(graphc.GraphcError, match="topk_method"):
        dv.preset("tiny", topk_method="noaux_tc")
    with pytest.raises(graphc.GraphcError, match="n_group"):
        dv.preset("tiny", n_group=3)
    with pytest.raises(graphc.GraphcError, match="linear"):
        dv.preset("tiny", rope_scaling={"type": "linear", "factor": 2.0})
    with pytest.raises(graphc.GraphcError, match="preset"):
        dv.preset("huge")
