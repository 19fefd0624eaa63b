"""Tiny random Hugging Face models (from configs, no downloads) for the torch frontend's
tests, with weights that make unit-ish activations (the default init gives near-uniform
softmaxes that would hide attention mistakes)."""
import numpy as np
import torch
import transformers

V = 97
N_LAYERS = 2


def well_scaled(m, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1:
                gain = name.endswith("weight") and ("ln" in name or "norm" in name.lower())
                p.copy_((1.0 if gain else 0.0) + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return m.eval()


def make(name: str):
    common = dict(vocab_size=V, attn_implementation="sdpa")
    if name == "gpt2":
        cfg = transformers.GPT2Config(n_embd=64, n_layer=N_LAYERS, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=0, **common)
        m = transformers.GPT2Model(cfg)
    elif name == "bert":
        cfg = transformers.BertConfig(hidden_size=64, num_hidden_layers=N_LAYERS,
                                      num_attention_heads=4, intermediate_size=128,
                                      max_position_embeddings=64, **common)
        m = transformers.BertModel(cfg, add_pooling_layer=False)
    elif name == "llama":
        cfg = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=N_LAYERS,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       intermediate_size=128, max_position_embeddings=64,
                                       **common)
        m = transformers.LlamaModel(cfg)
    elif name == "qwen2":
        cfg = transformers.Qwen2Config(hidden_size=64, num_hidden_layers=N_LAYERS,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       intermediate_size=128, max_position_embeddings=64,
                                       **common)
        m = transformers.Qwen2Model(cfg)
    elif name == "gemma2":      # eager attention with a tanh soft cap of the scores
        cfg = transformers.Gemma2Config(hidden_size=64, num_hidden_layers=N_LAYERS,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        head_dim=16, intermediate_size=128,
                                        max_position_embeddings=64, vocab_size=V,
                                        attn_implementation="eager")
        m = transformers.Gemma2Model(cfg)
    elif name == "mixtral":     # MoE: experts through transformers' grouped GEMM
        cfg = transformers.MixtralConfig(hidden_size=64, num_hidden_layers=N_LAYERS,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         intermediate_size=48, max_position_embeddings=64,
                                         num_local_experts=4, num_experts_per_tok=2,
                                         **common)
        m = transformers.MixtralModel(cfg)
    elif name == "qwen2_moe":   # MoE with a gated shared expert, qkv bias
        cfg = transformers.Qwen2MoeConfig(hidden_size=64, num_hidden_layers=N_LAYERS,
                                          num_attention_heads=4, num_key_value_heads=2,
                                          intermediate_size=128, moe_intermediate_size=32,
                                          shared_expert_intermediate_size=64, num_experts=4,
                                          num_experts_per_tok=2, max_position_embeddings=64,
                                          **common)
        m = transformers.Qwen2MoeModel(cfg)
    else:
        raise ValueError(name)
    return well_scaled(m)


class Hidden(torch.nn.Module):
    """(input_ids, attention_mask) -> last_hidden_state, without a kv cache."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          use_cache=False).last_hidden_state


def inputs(rng, B, S):
    """Random ids and a right-padded mask: row 0 full, the others 1..S-1 tokens."""
    ids = rng.integers(0, V, size=(B, S)).astype(np.int64)
    mask = np.ones((B, S), np.int64)
    for b in range(1, B):
        mask[b, int(rng.integers(1, S)):] = 0
    return ids, mask


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
