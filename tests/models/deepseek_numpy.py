"""An independent float64 NumPy DeepSeek-V2 for the model tests, written from
shared/DEEPSEEK_V2.md: per-head and per-token loops, RoPE as complex rotation, the router
with explicit sorting. Reads a parameter dict with the Hugging Face names (routed experts
stacked as experts.gate_up_proj [E, 2I, H] and experts.down_proj [E, H, I])."""
import math

import numpy as np


def rms(x, w, eps):
    return w * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)


def silu(x):
    return x / (1 + np.exp(-x))


def yarn(c):
    """(inv_freq, cos/sin factor, softmax factor) from the formulas of DEEPSEEK_V2.md."""
    d, theta = c.qk_rope_head_dim, c.rope_theta
    base = np.array([theta ** (-2 * i / d) for i in range(d // 2)])
    rs = c.rope_scaling
    if not rs:
        return base, 1.0, 1.0

    def m(s, a):
        return 0.1 * a * math.log(s) + 1 if s > 1 else 1.0

    def corr(r):
        return d * math.log(rs["original_max_position_embeddings"] / (2 * math.pi * r)) \
            / (2 * math.log(theta))
    f = rs["factor"]
    low = max(math.floor(corr(rs["beta_fast"])), 0)
    high = min(math.ceil(corr(rs["beta_slow"])), d - 1)
    if low == high:
        high += 0.001
    inv = []
    for i in range(d // 2):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        inv.append(base[i] * (1 - ramp) + base[i] / f * ramp)
    return (np.array(inv), m(f, rs["mscale"]) / m(f, rs["mscale_all_dim"]),
            m(f, rs["mscale_all_dim"]) ** 2)


def swiglu(x, g, u, d):
    return (silu(x @ g.T) * (x @ u.T)) @ d.T


def moe_token(x, P, pre, c):
    E, K = c.n_routed_experts, c.num_experts_per_tok
    z = P[pre + "gate.weight"] @ x
    s = np.exp(z - z.max())
    s /= s.sum()
    if c.topk_method == "group_limited_greedy":
        per = E // c.n_group
        gscore = [s[g * per:(g + 1) * per].max() for g in range(c.n_group)]
        keep = sorted(range(c.n_group), key=lambda g: -gscore[g])[:c.topk_group]
        s = np.array([s[e] if e // per in keep else 0.0 for e in range(E)])
    top = sorted(range(E), key=lambda e: -s[e])[:K]
    w = np.array([s[e] for e in top])
    if K > 1 and c.norm_topk_prob:
        w = w / (w.sum() + 1e-20)
    else:
        w = w * c.routed_scaling_factor
    I = c.moe_intermediate_size
    gu, dn = P[pre + "experts.gate_up_proj"], P[pre + "experts.down_proj"]
    y = sum(wk * swiglu(x, gu[e, :I], gu[e, I:], dn[e]) for wk, e in zip(w, top))
    if c.n_shared_experts:
        s_ = pre + "shared_experts."
        y = y + swiglu(x, P[s_ + "gate_proj.weight"], P[s_ + "up_proj.weight"],
                       P[s_ + "down_proj.weight"])
    return y


def deepseek_logits(params, c, ids, inv_freq=None, latents=None):
    """Logits [S, vocab] in float64. ``inv_freq`` overrides the RoPE frequencies (a model
    keeps them in float32, like its weights; the test checks them against yarn()). A list
    given as ``latents`` receives each layer's post-norm c_kv [S, d_c] and rotated k_pe
    [S, d_r] (what the decode cache holds)."""
    P = {k: v.astype(np.float64) for k, v in params.items()}
    S = len(ids)
    nh, dn, dr, dv, dc = (c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim,
                          c.v_head_dim, c.kv_lora_rank)
    inv, mcs, sm = yarn(c)
    if inv_freq is not None:
        inv = np.asarray(inv_freq, np.float64)
    rot = mcs * np.exp(1j * np.outer(np.arange(S), inv))

    def rope(x):                                   # x [S, dr]
        z = (x[:, 0::2] + 1j * x[:, 1::2]) * rot
        out = np.empty_like(x)
        out[:, 0::2], out[:, 1::2] = z.real, z.imag
        return out
    scale = (dn + dr) ** -0.5 * sm
    h = P["model.embed_tokens.weight"][ids]
    for l in range(c.num_hidden_layers):
        p = f"model.layers.{l}."
        a = p + "self_attn."
        x = rms(h, P[p + "input_layernorm.weight"], c.rms_norm_eps)
        if c.q_lora_rank is None:
            q = x @ P[a + "q_proj.weight"].T
        else:
            q = rms(x @ P[a + "q_a_proj.weight"].T, P[a + "q_a_layernorm.weight"],
                    c.rms_norm_eps) @ P[a + "q_b_proj.weight"].T
        kv = x @ P[a + "kv_a_proj_with_mqa.weight"].T
        ckv = rms(kv[:, :dc], P[a + "kv_a_layernorm.weight"], c.rms_norm_eps)
        kpe = rope(kv[:, dc:])
        if latents is not None:
            latents += [ckv, kpe]
        up = ckv @ P[a + "kv_b_proj.weight"].T     # [S, nh*(dn+dv)]
        heads = []
        for j in range(nh):
            qj = q[:, j * (dn + dr):(j + 1) * (dn + dr)]
            qj = np.concatenate([qj[:, :dn], rope(qj[:, dn:])], axis=1)
            uj = up[:, j * (dn + dv):(j + 1) * (dn + dv)]
            kj = np.concatenate([uj[:, :dn], kpe], axis=1)
            vj = uj[:, dn:]
            o = np.zeros((S, dv))
            for t in range(S):
                sc = kj[:t + 1] @ qj[t] * scale
                pr = np.exp(sc - sc.max())
                o[t] = (pr / pr.sum()) @ vj[:t + 1]
            heads.append(o)
        h = h + np.concatenate(heads, axis=1) @ P[a + "o_proj.weight"].T
        x = rms(h, P[p + "post_attention_layernorm.weight"], c.rms_norm_eps)
        m = p + "mlp."
        if l >= c.first_k_dense_replace and l % c.moe_layer_freq == 0:
            f = np.stack([moe_token(x[t], P, m, c) for t in range(S)])
        else:
            f = swiglu(x, P[m + "gate_proj.weight"], P[m + "up_proj.weight"],
                       P[m + "down_proj.weight"])
        h = h + f
    head = P["model.embed_tokens.weight"] if c.tie_word_embeddings else P["lm_head.weight"]
    return rms(h, P["model.norm.weight"], c.rms_norm_eps) @ head.T
