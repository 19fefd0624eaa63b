"""DeepSeek-V2 against `transformers` (>= 5.15, the `compare` extra; skipped without it):
tiny random DeepseekV2ForCausalLM checkpoints written by save_pretrained, loaded with
deepseek_v2.load; logits in float32 and float64, greedy generation, fused experts."""
import contextlib
from unittest import mock

import numpy as np
import pytest

from graphc.models import deepseek_v2 as dv

torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
transformers = pytest.importorskip("transformers", minversion="5.15",
                                   reason="needs the 'compare' extra (transformers >= 5.15)")
pytestmark = pytest.mark.compare

from transformers import DeepseekV2Config, DeepseekV2ForCausalLM  # noqa: E402
from transformers.models.deepseek_v2 import modeling_deepseek_v2 as hf_mod  # noqa: E402

YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
        "original_max_position_embeddings": 32, "beta_fast": 32, "beta_slow": 1,
        "mscale": 1.0, "mscale_all_dim": 0.707}
BASE = dict(vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
            num_attention_heads=4, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
            qk_rope_head_dim=4, v_head_dim=6, n_routed_experts=8, n_shared_experts=1,
            num_experts_per_tok=3, moe_intermediate_size=12, first_k_dense_replace=1,
            topk_method="group_limited_greedy", n_group=4, topk_group=2,
            routed_scaling_factor=16.0, max_position_embeddings=128, eos_token_id=None,
            bos_token_id=None, pad_token_id=0, rope_parameters=YARN)
# Together these cover: q_lora_rank set / unset; greedy / group_limited_greedy;
# routed_scaling_factor 16 / 1; YaRN on / off; first_k_dense_replace 1 / 0.
VARIANTS = {
    "v2_like": {},
    "lite_like": dict(q_lora_rank=None, topk_method="greedy", n_group=1, topk_group=1,
                      routed_scaling_factor=1.0),
    "no_yarn_all_moe": dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                            first_k_dense_replace=0),
    "greedy_rsf16_no_q_lora_dense0": dict(q_lora_rank=None, topk_method="greedy",
                                          first_k_dense_replace=0, n_group=1, topk_group=1),
    "group_rsf1_plain_rope": dict(routed_scaling_factor=1.0, rope_parameters={
        "rope_type": "default", "rope_theta": 500.0}),
}


def hf_model(seed, **overrides):
    cfg = DeepseekV2Config(**{**BASE, **overrides})
    cfg._attn_implementation = "eager"
    if hasattr(cfg, "_experts_implementation"):
        cfg._experts_implementation = "eager"
    torch.manual_seed(seed)
    m = DeepseekV2ForCausalLM(cfg).eval()
    with torch.no_grad():   # well-scaled weights (the default init is tiny and uniform-ish)
        for name, p in m.named_parameters():
            if p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5
                        * (4.0 if name.endswith("gate.weight") else 1.0))
    return m


class _Float64Torch:
    """transformers computes RMSNorm, the router, RoPE and the attention softmax in float32
    even in a float64 model; this stand-in for the module's ``torch`` widens them."""

    def __getattr__(self, name):
        return torch.float64 if name in ("float32", "float") else getattr(torch, name)


@contextlib.contextmanager
def hf_float64():
    with mock.patch.object(hf_mod, "torch", _Float64Torch()), \
            mock.patch.object(torch.Tensor, "float", torch.Tensor.double), torch.no_grad():
        yield


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_transformers(name, tmp_path):
    hf = hf_model(1, **VARIANTS[name])
    hf.save_pretrained(tmp_path)
    model = dv.load(tmp_path)
    ids = np.random.default_rng(2).integers(0, BASE["vocab_size"], 13)
    # the YaRN frequencies and factors, computed by transformers in float32
    np.testing.assert_allclose(model.inv_freq, hf.model.rotary_emb.inv_freq.numpy(), rtol=1e-6)
    assert model.rope_scale == pytest.approx(hf.model.rotary_emb.attention_scaling)
    assert model.softmax_scale == pytest.approx(hf.model.layers[0].self_attn.scaling)
    with torch.no_grad():
        ref32 = hf(torch.from_numpy(ids)[None]).logits[0].numpy()
    assert rel(model.forward(ids), ref32.astype(np.float64)) < 1e-5
    hf64 = hf.double()
    with torch.no_grad():   # the same (float32-rounded) frequencies on both sides
        hf64.model.rotary_emb.inv_freq.copy_(torch.from_numpy(model.inv_freq.astype(np.float64)))
    with hf_float64():
        ref64 = hf64(torch.from_numpy(ids)[None]).logits[0].numpy()
    assert ref64.dtype == np.float64
    assert rel(model.forward(ids, float64=True), ref64) < 1e-10


def test_generate_matches_transformers_greedy(tmp_path):
    hf = hf_model(4)
    hf.save_pretrained(tmp_path)
    model = dv.load(tmp_path)
    prompt = np.array([7, 3, 55, 21, 9])
    n = 12
    with torch.no_grad():
        want = hf.generate(torch.from_numpy(prompt)[None], max_new_tokens=n, do_sample=False,
                           min_new_tokens=0)[0].numpy()
    got = model.generate(prompt, n)
    assert len(set(got[5:].tolist())) > 1          # not a degenerate repetition
    np.testing.assert_array_equal(got, want)


def test_fused_experts_checkpoint_loads_to_same_logits(tmp_path):
    from safetensors.numpy import load_file, save_file
    hf = hf_model(5)
    hf.save_pretrained(tmp_path / "per_expert")
    t = load_file(str(tmp_path / "per_expert" / "model.safetensors"))
    E = BASE["n_routed_experts"]
    fused = {k: v for k, v in t.items() if ".experts." not in k}
    for l in range(BASE["first_k_dense_replace"], BASE["num_hidden_layers"]):
        pre = f"model.layers.{l}.mlp.experts."
        fused[pre + "gate_up_proj"] = np.stack([np.concatenate(
            [t[f"{pre}{e}.gate_proj.weight"], t[f"{pre}{e}.up_proj.weight"]]) for e in range(E)])
        fused[pre + "down_proj"] = np.stack([t[f"{pre}{e}.down_proj.weight"] for e in range(E)])
    (tmp_path / "fused").mkdir()
    (tmp_path / "fused" / "config.json").write_bytes(
        (tmp_path / "per_expert" / "config.json").read_bytes())
    save_file(fused, str(tmp_path / "fused" / "model.safetensors"))
    ids = np.array([1, 2, 3, 40, 50, 60])
    a = dv.load(tmp_path / "per_expert").forward(ids)
    b = dv.load(tmp_path / "fused").forward(ids)
    np.testing.assert_array_equal(a, b)
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)[None]).logits[0].numpy()
    assert rel(b, ref.astype(np.float64)) < 1e-5
