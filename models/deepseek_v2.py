"""DeepSeek-V2 (``shared/DEEPSEEK_V2.md``): Multi-head Latent Attention with decoupled RoPE
(YaRN), DeepSeekMoE with shared experts, SwiGLU, RMSNorm, pre-norm, untied lm_head.

    from graphc.models import deepseek_v2
    model = deepseek_v2.load("path/to/hf_dir")            # config.json + *.safetensors
    model = deepseek_v2.random(deepseek_v2.preset("mini"), seed=0)
    logits = model.forward(ids, backend="reference")      # [S, vocab] (prefill)
    out = model.generate(prompt_ids, max_new_tokens=16)   # greedy, compressed MLA cache

Parameters keep the Hugging Face names and layouts (linear weights [out, in]); routed
experts are stacked as ``mlp.experts.gate_up_proj`` [E, 2I, H] and ``mlp.experts.down_proj``
[E, H, I] (the ``transformers`` in-memory layout), which is what the ``moe`` op takes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

import graphc
from graphc.errors import AttrError, CheckpointError


# ---------------------------------------------------------------------------------------
# Config

# The config's schema: per field (kind, low, high[, None allowed]). Bounds are generous
# (DeepSeek-V2 236B is far inside every one) but finite, so a hostile config.json cannot
# make a size overflow, a loop run for hours or a table fill the memory; the memory a
# config implies is checked separately, before loading (deepseek_v2_checkpoint).
_K = 1 << 10
CONFIG_SCHEMA = {
    "vocab_size": ("int", 1, 16 * _K * _K),
    "hidden_size": ("int", 1, 64 * _K),
    "intermediate_size": ("int", 1, _K * _K),
    "moe_intermediate_size": ("int", 1, _K * _K),
    "num_hidden_layers": ("int", 1, 4 * _K),
    "num_attention_heads": ("int", 1, 4 * _K),
    "q_lora_rank": ("int", 1, 64 * _K, None),
    "kv_lora_rank": ("int", 1, 64 * _K),
    "qk_nope_head_dim": ("int", 1, 4 * _K),
    "qk_rope_head_dim": ("int", 2, 4 * _K),
    "v_head_dim": ("int", 1, 4 * _K),
    "n_routed_experts": ("int", 1, 64 * _K),
    "n_shared_experts": ("int", 0, _K),
    "num_experts_per_tok": ("int", 1, 64 * _K),
    "first_k_dense_replace": ("int", 0, 4 * _K),
    "moe_layer_freq": ("int", 1, 4 * _K),
    "topk_method": ("choice", ("greedy", "group_limited_greedy")),
    "n_group": ("int", 1, 64 * _K),
    "topk_group": ("int", 1, 64 * _K),
    "routed_scaling_factor": ("float", 0.0, 1e6),        # (low, high]: > 0
    "norm_topk_prob": ("bool",),
    "rms_norm_eps": ("float", 0.0, 1.0),
    "rope_theta": ("float", 1.0, 1e30),
    "rope_scaling": ("dict", None),
    "max_position_embeddings": ("int", 1, 16 * _K * _K),
    "tie_word_embeddings": ("bool",),
    "eos_token_id": ("int", 0, 1 << 31, None),
    "dtype": ("choice", ("float16", "float32", "float64")),
}
# YaRN's fields (the last entry: required or optional).
ROPE_SCALING_SCHEMA = {
    "factor": ("float", 0.0, 1e6, "required"),
    "original_max_position_embeddings": ("int", 1, 16 * _K * _K, "required"),
    "beta_fast": ("float", 0.0, 1e6, None, "optional"),
    "beta_slow": ("float", 0.0, 1e6, None, "optional"),
    "mscale": ("float", -1e-300, 1e6, None, "optional"),      # >= 0
    "mscale_all_dim": ("float", -1e-300, 1e6, None, "optional"),
}
# Fields that set tensor shapes: config.json must give them (no default stands in).
REQUIRED_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                   "num_hidden_layers", "num_attention_heads", "kv_lora_rank",
                   "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_routed_experts")


def _show(v, limit: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _kind(v) -> str:
    return "" if isinstance(v, (int, float, type(None))) and not isinstance(v, bool) \
        else f" ({type(v).__name__})"


def _check_field(rule, v) -> str | None:
    """What is wrong with ``v`` under ``rule`` (None: nothing)."""
    kind = rule[0]
    if v is None and (len(rule) > 3 and rule[3] is None or kind == "dict"):
        return None
    if kind == "int":
        if not isinstance(v, int) or isinstance(v, bool) or not rule[1] <= v <= rule[2]:
            return f"must be an integer in {rule[1]:,}..{rule[2]:,}" + \
                (" or null" if len(rule) > 3 else "")
    elif kind == "float":
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and \
            (isinstance(v, int) or math.isfinite(v)) and rule[1] < v <= rule[2]  # 10**400
        if not ok:
            low = "> 0" if rule[1] == 0 else ">= 0" if rule[1] < 0 else f"> {rule[1]:g}"
            return f"must be a finite number {low} and <= {rule[2]:g}" + \
                (" or null" if len(rule) > 3 else "")
    elif kind == "bool":
        if not isinstance(v, bool):
            return "must be true or false"
    elif kind == "choice":
        if not isinstance(v, str) or v not in rule[1]:
            return "must be one of " + ", ".join(repr(c) for c in rule[1])
    elif kind == "dict":
        if not isinstance(v, dict):
            return "must be an object or null"
    return None


@dataclass(frozen=True)
class DeepseekV2Config:
    """The model's hyper-parameters, with the Hugging Face ``DeepseekV2Config`` names.

    ``rope_scaling`` is None (plain RoPE) or a YaRN dict with ``factor``,
    ``original_max_position_embeddings``, ``beta_fast``, ``beta_slow``, ``mscale``,
    ``mscale_all_dim`` (``transformers`` 5.x keeps these in ``rope_parameters`` beside
    ``rope_theta``; :meth:`from_hf` reads both spellings).
    """
    vocab_size: int = 102400
    hidden_size: int = 5120
    intermediate_size: int = 12288
    moe_intermediate_size: int = 1536
    num_hidden_layers: int = 60
    num_attention_heads: int = 128
    q_lora_rank: int | None = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    n_routed_experts: int = 160
    n_shared_experts: int = 2
    num_experts_per_tok: int = 6
    first_k_dense_replace: int = 1
    moe_layer_freq: int = 1
    topk_method: str = "group_limited_greedy"
    n_group: int = 8
    topk_group: int = 3
    routed_scaling_factor: float = 16.0
    norm_topk_prob: bool = False
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = field(default_factory=lambda: dict(
        type="yarn", factor=40.0, original_max_position_embeddings=4096, beta_fast=32.0,
        beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707))
    max_position_embeddings: int = 163840
    tie_word_embeddings: bool = False
    eos_token_id: int | None = None
    dtype: str = "float32"

    def __post_init__(self):
        def bad(msg):
            raise AttrError(f"DeepseekV2Config: {msg}")
        for name, rule in CONFIG_SCHEMA.items():
            problem = _check_field(rule, getattr(self, name))
            if problem:
                bad(f"{name} {problem}, got {_show(getattr(self, name))}"
                    f"{_kind(getattr(self, name))}")
        if self.topk_method == "group_limited_greedy":
            if self.n_routed_experts % self.n_group:
                bad(f"n_routed_experts {self.n_routed_experts} is not a multiple of "
                    f"n_group {self.n_group}")
            if not 1 <= self.topk_group <= self.n_group:
                bad(f"topk_group {self.topk_group} must be in 1..n_group {self.n_group}")
            if self.num_experts_per_tok > self.topk_group * (self.n_routed_experts
                                                             // self.n_group):
                bad(f"num_experts_per_tok {self.num_experts_per_tok} exceeds the experts "
                    f"in topk_group {self.topk_group} groups")
        if not 1 <= self.num_experts_per_tok <= self.n_routed_experts:
            bad(f"num_experts_per_tok {self.num_experts_per_tok} must be in 1..n_routed_"
                f"experts {self.n_routed_experts}")
        if self.qk_rope_head_dim % 2:
            bad(f"qk_rope_head_dim {self.qk_rope_head_dim} must be even")
        rs = self.rope_scaling
        if rs is not None:
            kind = rs.get("type", rs.get("rope_type"))
            if kind != "yarn":
                bad(f"rope scaling {_show(kind)} is not supported (only 'yarn' or none)")
            for k, rule in ROPE_SCALING_SCHEMA.items():
                if k not in rs and rule[-1] == "required":
                    bad(f"YaRN rope scaling needs {k!r}")
                problem = _check_field(rule[:-1], rs.get(k))
                if problem:
                    bad(f"rope_scaling.{k} {problem}, got {_show(rs.get(k))}"
                        f"{_kind(rs.get(k))}")

    # -- derived sizes --------------------------------------------------------------------
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer: int) -> bool:
        return layer >= self.first_k_dense_replace and layer % self.moe_layer_freq == 0

    # -- Hugging Face config.json --------------------------------------------------------
    @classmethod
    def from_hf(cls, d: dict, require_shapes: bool = False) -> "DeepseekV2Config":
        """From a ``config.json`` dict (``transformers`` 4.x ``rope_scaling`` or 5.x
        ``rope_parameters``). Unknown keys are ignored; missing ones take the defaults,
        except with ``require_shapes`` (a checkpoint's config.json) the fields that set
        tensor shapes (:data:`REQUIRED_FIELDS`), which must be there. Every field is
        checked against
        :data:`CONFIG_SCHEMA` (types and bounds); a bad one is a CheckpointError naming
        the field and the value."""
        if not isinstance(d, dict):
            raise CheckpointError(f"config.json: not a JSON object ({_kind(d).strip()})")
        for k in REQUIRED_FIELDS if require_shapes else ():
            if d.get(k) is None:
                raise CheckpointError(f"config.json: {k} is {'null' if k in d else 'missing'}"
                                      f"; it sets tensor shapes, so there is no default")
        names = {f.name for f in fields(cls)} - {"rope_scaling", "rope_theta", "dtype"}
        kw = {k: d[k] for k in names if k in d and d[k] is not None}
        if d.get("q_lora_rank", 0) is None:
            kw["q_lora_rank"] = None
        if isinstance(kw.get("eos_token_id"), list):
            kw["eos_token_id"] = kw["eos_token_id"][0] if kw["eos_token_id"] else None
        rp = d.get("rope_parameters")
        rs = d.get("rope_scaling")
        theta = d.get("rope_theta")
        for k, v in (("rope_parameters", rp), ("rope_scaling", rs)):
            if v is not None and not isinstance(v, dict):
                raise CheckpointError(f"config.json: {k} must be an object or null, got "
                                      f"{_show(v)}{_kind(v)}")
        if isinstance(rp, dict):
            theta = rp.get("rope_theta", theta)
            kind = rp.get("rope_type", rp.get("type", "default"))
            rs = None if kind == "default" else {k: v for k, v in rp.items()
                                                 if k != "rope_theta"}
        if rs is not None:
            rs = dict(rs)
            rs["type"] = rs.pop("rope_type", rs.get("type"))
        kw["rope_scaling"] = rs
        if theta is not None:    # an integer in range is a float (10000 -> 10000.0)
            ok_int = isinstance(theta, int) and not isinstance(theta, bool) and abs(theta) < 1e30
            kw["rope_theta"] = float(theta) if ok_int else theta
        if d.get("topk_method") is None:
            kw["topk_method"] = "greedy"
        for k in ("n_group", "topk_group"):
            if d.get(k) is None:
                kw[k] = 1
        if "moe_layer_freq" not in d:
            kw["moe_layer_freq"] = 1
        if d.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"config.json: hidden_act {_show(d['hidden_act'])} is not "
                                  "supported (only 'silu')")
        for k in ("attention_bias", "mlp_bias"):
            if d.get(k) not in (None, False):
                raise CheckpointError(f"config.json: {k}={_show(d[k])} is not supported "
                                      "(only false)")
        try:
            return cls(**kw)
        except AttrError as e:
            raise CheckpointError("config.json: " + e.message.removeprefix(
                "DeepseekV2Config: ")) from None
        except TypeError as e:
            raise CheckpointError(f"config.json: {e}") from None

    def to_hf(self) -> dict:
        """A ``transformers`` 5.x ``DeepseekV2Config`` keyword dict."""
        d = {k: v for k, v in asdict(self).items()
             if k not in ("rope_scaling", "rope_theta", "dtype", "moe_layer_freq")}
        rp = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling:
            rp.update({k: v for k, v in self.rope_scaling.items() if k != "type"})
            rp["rope_type"] = "yarn"
        d["rope_parameters"] = rp
        return d


PRESETS = {
    # DeepSeek-V2 (236B) and -Lite (16B): the released shapes (for the cache arithmetic;
    # far too large to build at random here).
    "v2": DeepseekV2Config(),
    "v2-lite": DeepseekV2Config(
        hidden_size=2048, num_hidden_layers=27, num_attention_heads=16, q_lora_rank=None,
        intermediate_size=10944, moe_intermediate_size=1408, n_routed_experts=64,
        num_experts_per_tok=6, topk_method="greedy", n_group=1, topk_group=1,
        routed_scaling_factor=1.0),
    # The scaled-down benchmark model (~196M parameters).
    "mini": DeepseekV2Config(
        vocab_size=32000, hidden_size=1024, intermediate_size=2816, moe_intermediate_size=352,
        num_hidden_layers=4, num_attention_heads=16, q_lora_rank=384, kv_lora_rank=256,
        qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, n_routed_experts=32,
        n_shared_experts=2, num_experts_per_tok=4, first_k_dense_replace=1,
        topk_method="group_limited_greedy", n_group=4, topk_group=2,
        routed_scaling_factor=16.0, max_position_embeddings=16384,
        rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=4096,
                          beta_fast=32.0, beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707)),
    # Tests: every feature on, tiny shapes.
    "tiny": DeepseekV2Config(
        vocab_size=97, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
        num_hidden_layers=2, num_attention_heads=4, q_lora_rank=24, kv_lora_rank=16,
        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6, n_routed_experts=8,
        n_shared_experts=1, num_experts_per_tok=3, first_k_dense_replace=1,
        topk_method="group_limited_greedy", n_group=4, topk_group=2,
        routed_scaling_factor=16.0, max_position_embeddings=256,
        rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=32,
                          beta_fast=32.0, beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707)),
}


def preset(name: str, **overrides) -> DeepseekV2Config:
    """A named config ('mini', 'tiny', 'v2', 'v2-lite'), with fields overridden."""
    if name not in PRESETS:
        raise AttrError(f"unknown DeepSeek-V2 preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# ---------------------------------------------------------------------------------------
# RoPE frequencies (YaRN)

def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """m(s, a) = 0.1 a ln(s) + 1 for s > 1, else 1."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_tables(config: DeepseekV2Config) -> tuple[np.ndarray, float, float]:
    """(inv_freq [d_r/2] float64, cos/sin factor, softmax-scale factor)."""
    d, base = config.qk_rope_head_dim, config.rope_theta
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    rs = config.rope_scaling
    if not rs:
        return inv, 1.0, 1.0
    factor = float(rs["factor"])
    orig = rs["original_max_position_embeddings"]
    beta_fast = rs.get("beta_fast") or 32.0
    beta_slow = rs.get("beta_slow") or 1.0
    mscale = rs.get("mscale") or 1.0
    mscale_all = rs.get("mscale_all_dim") or 0.0

    def corr(rot):
        return d * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))
    low = max(math.floor(corr(beta_fast)), 0)
    high = min(math.ceil(corr(beta_slow)), d - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    inv_freq = inv * (1 - ramp) + (inv / factor) * ramp
    cos_sin_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all)
    softmax_factor = yarn_mscale(factor, mscale_all) ** 2 if mscale_all else 1.0
    return inv_freq, cos_sin_factor, softmax_factor


# ---------------------------------------------------------------------------------------
# Parameters

def param_shapes(config: DeepseekV2Config) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape (routed experts stacked)."""
    c = config
    H, nh = c.hidden_size, c.num_attention_heads
    s = {"model.embed_tokens.weight": (c.vocab_size, H), "model.norm.weight": (H,)}
    if not c.tie_word_embeddings:
        s["lm_head.weight"] = (c.vocab_size, H)
    for l in range(c.num_hidden_layers):
        p = f"model.layers.{l}."
        s[p + "input_layernorm.weight"] = (H,)
        s[p + "post_attention_layernorm.weight"] = (H,)
        a = p + "self_attn."
        if c.q_lora_rank is None:
            s[a + "q_proj.weight"] = (nh * c.qk_head_dim, H)
        else:
            s[a + "q_a_proj.weight"] = (c.q_lora_rank, H)
            s[a + "q_a_layernorm.weight"] = (c.q_lora_rank,)
            s[a + "q_b_proj.weight"] = (nh * c.qk_head_dim, c.q_lora_rank)
        s[a + "kv_a_proj_with_mqa.weight"] = (c.kv_lora_rank + c.qk_rope_head_dim, H)
        s[a + "kv_a_layernorm.weight"] = (c.kv_lora_rank,)
        s[a + "kv_b_proj.weight"] = (nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank)
        s[a + "o_proj.weight"] = (H, nh * c.v_head_dim)
        m = p + "mlp."
        if c.is_moe_layer(l):
            E, I = c.n_routed_experts, c.moe_intermediate_size
            Is = I * c.n_shared_experts
            s[m + "gate.weight"] = (E, H)
            s[m + "experts.gate_up_proj"] = (E, 2 * I, H)
            s[m + "experts.down_proj"] = (E, H, I)
            if c.n_shared_experts:
                s[m + "shared_experts.gate_proj.weight"] = (Is, H)
                s[m + "shared_experts.up_proj.weight"] = (Is, H)
                s[m + "shared_experts.down_proj.weight"] = (H, Is)
        else:
            I = c.intermediate_size
            s[m + "gate_proj.weight"] = (I, H)
            s[m + "up_proj.weight"] = (I, H)
            s[m + "down_proj.weight"] = (H, I)
    return s


def init_params(config: DeepseekV2Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random parameters: weights ~ N(0, 1/fan_in), norms 1 + N(0, 0.1^2),
    embeddings N(0, 1); the router is scaled up so expert scores are well separated."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(config.dtype)
    # drawn in the model's dtype (float32 normals directly: mini's 196M in ~2 s, not ~5)
    draw = dt if dt in (np.float32, np.float64) else np.float64
    out = {}
    for name, shape in param_shapes(config).items():
        a = rng.standard_normal(shape, dtype=draw)
        if len(shape) == 1:
            a *= 0.1
            a += 1
        elif name != "model.embed_tokens.weight":
            a *= draw.type((4.0 if name.endswith("mlp.gate.weight") else 1.0)
                           / math.sqrt(shape[-1]))
        out[name] = a.astype(dt, copy=False)
    return out


# ---------------------------------------------------------------------------------------
# The forward pass (traced)

def linear(x, wt):
    """x @ W^T; ``wt`` is the graph constant of W^T, a NumPy view of the [out, in] weight
    (see :meth:`DeepseekV2._constants`), so no transposed copy is ever made."""
    return x @ wt


def swiglu(x, gate_up, down, inter: int):
    """down(silu(gate(x)) * up(x)) with gate and up as one GEMM: ``gate_up`` is the
    constant [H, 2I] of both (gate columns first)."""
    gu = linear(x, gate_up)
    return linear(graphc.silu(gu[:, :inter]) * gu[:, inter:], down)


def route(x, P, pre: str, c: DeepseekV2Config):
    """DeepSeekMoE router: softmax scores over the routed experts, greedy or
    group-limited top-K, then normalised or scaled weights. x: [N, H] -> ([N, K], [N, K])."""
    E, K = c.n_routed_experts, c.num_experts_per_tok
    scores = graphc.softmax(linear(x, P[pre + "gate.weight"]), axis=-1)        # [N, E]
    if c.topk_method == "group_limited_greedy":
        G = c.n_group
        N = x.shape[0]
        group = scores.reshape(N, G, E // G).max(axis=-1)                        # [N, G]
        kth = graphc.topk(group, c.topk_group)[0][:, c.topk_group - 1:]          # [N, 1]
        dropped = (group < kth).reshape(N, G, 1)                                  # [N, G, 1]
        scores = graphc.where(dropped, 0.0, scores.reshape(N, G, E // G)).reshape(N, E)
    w, idx = graphc.topk(scores, K)
    if K > 1 and c.norm_topk_prob:
        w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
    elif c.routed_scaling_factor != 1:
        w = w * float(c.routed_scaling_factor)
    return w, idx


def moe_block(x, P, pre: str, c: DeepseekV2Config):
    w, idx = route(x, P, pre, c)
    y = graphc.moe(x, w, idx, P[pre + "experts.gate_up_proj"], P[pre + "experts.down_proj"])
    if c.n_shared_experts:
        s = pre + "shared_experts."
        y = y + swiglu(x, P[s + "gate_up"], P[s + "down_proj.weight"],
                       c.moe_intermediate_size * c.n_shared_experts)
    return y


def mla_qkv(x, P, pre: str, c: DeepseekV2Config, rope, last_query: bool = False):
    """The per-token projections of MLA. x: [S, H] -> q_nope [nh, Q, d_n], q_pe [nh, Q, d_r]
    (rotated), c_kv [S, d_c] (post-norm latent), k_pe [S, d_r] (rotated); Q = S, or 1 with
    ``last_query`` (only the last token's query: keys and values still cover all S)."""
    nh, dn, dr, dc = (c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim,
                      c.kv_lora_rank)
    S = x.shape[0]
    # the two projections of x as one GEMM: [q_a_proj (or q_proj) ; kv_a_proj_with_mqa]
    a = linear(x, P[pre + "qkv_a"])
    r = c.q_lora_rank or nh * (dn + dr)
    aq = a[S - 1:, :r] if last_query else a[:, :r]
    if c.q_lora_rank is None:
        q = aq
    else:
        qa = graphc.rmsnorm(aq, P[pre + "q_a_layernorm.weight"], eps=c.rms_norm_eps)
        q = linear(qa, P[pre + "q_b_proj.weight"])
    Q = 1 if last_query else S
    q = q.reshape(Q, nh, dn + dr).transpose(1, 0, 2)                              # [nh,Q,dn+dr]
    q_nope, q_pe = q[:, :, :dn], rope(q[:, :, dn:], last_query)
    c_kv = graphc.rmsnorm(a[:, r:r + dc], P[pre + "kv_a_layernorm.weight"],
                          eps=c.rms_norm_eps)
    k_pe = rope(a[:, r + dc:])
    return q_nope, q_pe, c_kv, k_pe


def mla_full(x, P, pre: str, c: DeepseekV2Config, rope, scale: float,
             last_query: bool = False):
    """Prefill MLA: keys and values expanded from the latent, causal attention.
    Returns (output [Q, H], c_kv [S, d_c], k_pe [S, d_r]) (the last two fill the cache);
    Q = S, or 1 with ``last_query`` (the last token attends to every key: no mask)."""
    nh, dn, dr, dv = c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
    S = x.shape[0]
    q_nope, q_pe, c_kv, k_pe = mla_qkv(x, P, pre, c, rope, last_query)
    kv = linear(c_kv, P[pre + "kv_b_proj.weight"]).reshape(S, nh, dn + dv).transpose(1, 0, 2)
    k_nope, v = kv[:, :, :dn], kv[:, :, dn:]
    k_pe_heads = graphc.concat([k_pe.reshape(1, S, dr)] * nh, axis=0)             # [nh,S,dr]
    q = graphc.concat([q_nope, q_pe], axis=-1)
    k = graphc.concat([k_nope, k_pe_heads], axis=-1)
    scores = graphc.scale(q @ k.transpose(0, 2, 1), scale)
    if not last_query:
        scores = scores + graphc.causal_mask(S, S, dtype=c.dtype)
    o = graphc.softmax(scores, axis=-1) @ v                                        # [nh,Q,dv]
    Q = 1 if last_query else S
    o = o.transpose(1, 0, 2).reshape(Q, nh * dv)
    return linear(o, P[pre + "o_proj.weight"]), c_kv, k_pe


def mla_absorbed(x, P, pre: str, c: DeepseekV2Config, rope, scale: float, cache_c, cache_pe,
                 mask=None):
    """Decode MLA with weight absorption: W_UK goes into the query and W_UV is applied
    to the attention output in latent space, so per-head keys and values are never made.
    x: [1, H]; cache_c [T, d_c], cache_pe [T, d_r] (earlier tokens); ``mask`` [T+1]
    (additive, optional): -inf for cache slots that hold no token yet.
    Returns (output [1, H], c_kv [1, d_c], k_pe [1, d_r]) for the new token."""
    nh, dn, dv, dc = c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim, c.kv_lora_rank
    q_nope, q_pe, c_kv, k_pe = mla_qkv(x, P, pre, c, rope)                        # q: [nh,1,*]
    q_lat = q_nope @ P[pre + "w_uk"]                                               # [nh,1,dc]
    keys_c = graphc.concat([cache_c, c_kv], axis=0)                               # [T+1, dc]
    keys_pe = graphc.concat([cache_pe, k_pe], axis=0)                             # [T+1, dr]
    scores = graphc.scale(q_lat @ keys_c.T + q_pe @ keys_pe.T, scale)           # [nh,1,T+1]
    if mask is not None:
        scores = scores + mask
    p = graphc.softmax(scores, axis=-1)
    o_lat = p @ keys_c                                                             # [nh,1,dc]
    o = (o_lat @ P[pre + "w_uv_t"]).transpose(1, 0, 2).reshape(1, nh * dv)       # [1,nh*dv]
    return linear(o, P[pre + "o_proj.weight"]), c_kv, k_pe


def mla_absorbed_batched(x, P, pre: str, c: DeepseekV2Config, rope, scale: float,
                         cache_c, cache_pe, mask):
    """Batched decode MLA (weight absorption as :func:`mla_absorbed`): one new token for
    each of B sequences, each with its own cache and position. x: [B, H]; cache_c
    [B, T, d_c], cache_pe [B, T, d_r]; ``mask`` [B, T] additive (0 for a slot that holds
    a token of that sequence, -inf for padding). The projections run on the B rows at
    once; the attention is a matmul batched over B with the heads.
    Returns (output [B, H], c_kv [B, d_c], k_pe [B, d_r]) for the new tokens."""
    nh, dv, dc, dr = c.num_attention_heads, c.v_head_dim, c.kv_lora_rank, c.qk_rope_head_dim
    B = x.shape[0]
    q_nope, q_pe, c_kv, k_pe = mla_qkv(x, P, pre, c, rope)                        # q: [nh,B,*]
    q_lat = (q_nope @ P[pre + "w_uk"]).transpose(1, 0, 2)                         # [B,nh,dc]
    q_pe = q_pe.transpose(1, 0, 2)                                                 # [B,nh,dr]
    keys_c = graphc.concat([cache_c, c_kv.reshape(B, 1, dc)], axis=1)             # [B,T+1,dc]
    keys_pe = graphc.concat([cache_pe, k_pe.reshape(B, 1, dr)], axis=1)           # [B,T+1,dr]
    scores = graphc.scale(q_lat @ keys_c.transpose(0, 2, 1)
                          + q_pe @ keys_pe.transpose(0, 2, 1), scale)             # [B,nh,T+1]
    scores = scores + mask.reshape(B, 1, mask.shape[1])
    p = graphc.softmax(scores, axis=-1)
    o_lat = (p @ keys_c).transpose(1, 0, 2)                                        # [nh,B,dc]
    o = (o_lat @ P[pre + "w_uv_t"]).transpose(1, 0, 2).reshape(B, nh * dv)       # [B,nh*dv]
    return linear(o, P[pre + "o_proj.weight"]), c_kv, k_pe


class DeepseekV2:
    """A DeepSeek-V2 model: config + parameters; traced graphs compiled once per backend."""

    def __init__(self, config: DeepseekV2Config, params: dict[str, np.ndarray]):
        self.config = config
        self.params = params
        inv_freq, self.rope_scale, softmax_factor = rope_tables(config)
        self.inv_freq = inv_freq.astype(config.dtype)
        self.softmax_scale = config.qk_head_dim ** -0.5 * softmax_factor
        self.positions = np.arange(config.max_position_embeddings, dtype=np.int64)
        self._compiled: dict = {}
        self._absorbed_cache = None
        self._fused_cache = None
        self._twin = None

    # -- traced bodies ----------------------------------------------------------------------
    def _constants(self, absorbed: bool = False) -> dict:
        """Graph constants by parameter name. Linear weights [out, in] become constants of
        their transposed NumPy views (``x @ W^T`` without a copy); with ``absorbed``, also
        each layer's per-head W_UK [nh, d_n, d_c] and W_UV^T [nh, d_c, d_v] (from kv_b_proj)."""
        c = self.config
        P = {}
        for k, v in self.params.items():
            if v.ndim == 2 and k.endswith(".weight") and k != "model.embed_tokens.weight":
                P[k] = graphc.constant(v.T, name=k + "^T")
            else:
                P[k] = graphc.constant(v, name=k)
        if c.tie_word_embeddings:
            P["lm_head.weight"] = graphc.constant(self.params["model.embed_tokens.weight"].T,
                                                  name="model.embed_tokens.weight^T")
        for k, w in self._fused().items():
            P[k] = graphc.constant(w, name=k)
        if absorbed:
            for k, (w_uk, w_uv_t) in self._absorbed().items():
                P[k + "w_uk"] = graphc.constant(w_uk, name=k + "w_uk")
                P[k + "w_uv_t"] = graphc.constant(w_uv_t, name=k + "w_uv_t")
        return P

    def _fused(self) -> dict:
        """Weights that share an input, side by side for one GEMM (made once, stored
        [out, in] like the others; the constant is the transposed view): per layer
        ``self_attn.qkv_a`` = [q_a_proj (or q_proj) ; kv_a_proj_with_mqa]^T, and
        ``mlp.gate_up`` / ``mlp.shared_experts.gate_up`` = [gate_proj ; up_proj]^T."""
        if self._fused_cache is None:
            c, p = self.config, self.params
            out = {}
            for l in range(c.num_hidden_layers):
                a = f"model.layers.{l}.self_attn."
                q = a + ("q_proj.weight" if c.q_lora_rank is None else "q_a_proj.weight")
                out[a + "qkv_a"] = np.concatenate([p[q], p[a + "kv_a_proj_with_mqa.weight"]]).T
                m = f"model.layers.{l}.mlp."
                if c.is_moe_layer(l):
                    m = m + "shared_experts." if c.n_shared_experts else None
                if m is not None:
                    out[m + "gate_up"] = np.concatenate([p[m + "gate_proj.weight"],
                                                         p[m + "up_proj.weight"]]).T
            self._fused_cache = out
        return self._fused_cache

    def _absorbed(self) -> dict:
        """Per layer: kv_b_proj split per head into W_UK [nh, d_n, d_c] and W_UV^T
        [nh, d_c, d_v] (contiguous copies, made once)."""
        if self._absorbed_cache is None:
            c = self.config
            nh, dn, dv, dc = (c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim,
                              c.kv_lora_rank)
            out = {}
            for l in range(c.num_hidden_layers):
                pre = f"model.layers.{l}.self_attn."
                w = self.params[pre + "kv_b_proj.weight"].reshape(nh, dn + dv, dc)
                out[pre] = (np.ascontiguousarray(w[:, :dn, :]),
                            np.ascontiguousarray(w[:, dn:, :].transpose(0, 2, 1)))
            self._absorbed_cache = out
        return self._absorbed_cache

    def _rope(self, pos):
        """rope(t) rotates rows at positions ``pos``; rope(t, True) the last one only."""
        inv = graphc.constant(self.inv_freq, name="rope.inv_freq")
        n = pos.shape[0]
        return lambda t, last=False: graphc.rope(t, pos[n - 1:] if last else pos, inv,
                                                 scale=self.rope_scale)

    def _ffn(self, x, P, layer: int):
        c = self.config
        pre = f"model.layers.{layer}.mlp."
        if c.is_moe_layer(layer):
            return moe_block(x, P, pre, c)
        return swiglu(x, P[pre + "gate_up"], P[pre + "down_proj.weight"], c.intermediate_size)

    def _head(self, h, P):
        c = self.config
        h = graphc.rmsnorm(h, P["model.norm.weight"], eps=c.rms_norm_eps)
        return linear(h, P["lm_head.weight"])

    def prefill(self, ids, with_cache: bool = False):
        """Traced body: ids int [S] -> logits [S, vocab]; or, ``with_cache`` (the first
        step of :meth:`generate`), the last token's logits [1, vocab] and the latent c_kv
        [S, d_c] and rotated k_pe [S, d_r] of every layer. Only the cache needs every
        token in the last layer, so there the query, attention output, FFN and head run
        for the last token alone."""
        c = self.config
        P = self._constants()
        S = ids.shape[0]
        pos = graphc.constant(self.positions, name="positions")[:S]
        rope = self._rope(pos)
        h = graphc.embedding(P["model.embed_tokens.weight"], ids)
        cache = []
        for l in range(c.num_hidden_layers):
            pre = f"model.layers.{l}."
            last = with_cache and l == c.num_hidden_layers - 1
            a, c_kv, k_pe = mla_full(graphc.rmsnorm(h, P[pre + "input_layernorm.weight"],
                                                    eps=c.rms_norm_eps),
                                     P, pre + "self_attn.", c, rope, self.softmax_scale,
                                     last_query=last)
            cache += [c_kv, k_pe]
            h = (h[S - 1:] if last else h) + a
            h = h + self._ffn(graphc.rmsnorm(h, P[pre + "post_attention_layernorm.weight"],
                                             eps=c.rms_norm_eps), P, l)
        logits = self._head(h, P)
        return (logits, *cache) if with_cache else logits

    def decode(self, ids, *cache, pos=None, mask=None):
        """Traced body of one decode step: ids int [1] at position T, cache = (c_kv [T, d_c],
        k_pe [T, d_r]) per layer -> (logits [1, vocab], then the new token's c_kv [1, d_c]
        and k_pe [1, d_r] per layer).

        Padded form (``generate``): the cache is a bucket of T slots of which the first
        few hold tokens; ``pos`` int [1] is the new token's position and ``mask`` [T] is 0
        for a filled slot and -inf for an empty one (T changes only when the bucket
        grows, so the executable's per-size state is made a few times per generation)."""
        c = self.config
        P = self._constants(absorbed=True)
        T = cache[0].shape[0]
        if pos is None:
            pos = graphc.constant(self.positions, name="positions")[T:T + 1]
        else:   # the new token's own slot (after the cache) is always visible
            zero = graphc.constant(np.zeros(1, c.dtype), name="zero")
            mask = graphc.concat([mask, zero], axis=0)                             # [T+1]
        return self._decode_layers(mla_absorbed, ids, cache, pos, mask, P)

    def decode_batched(self, ids, *inputs):
        """Traced body of one batched decode step: B sequences, each one new token.
        ``ids`` int [B]; then per layer c_kv [B, T, d_c] and k_pe [B, T, d_r] (each
        sequence's own cache, in a bucket of T slots); then ``pos`` int [B] (each new
        token's own position) and ``mask`` [B, T] (0 for a slot that holds one of that
        sequence's tokens, -inf for an empty one) -> (logits [B, vocab], then the new
        tokens' c_kv [B, d_c] and k_pe [B, d_r] per layer). Every linear, norm and MoE
        runs on the B rows at once; the attention is batched over B and the heads."""
        c = self.config
        P = self._constants(absorbed=True)
        *cache, pos, mask = inputs
        B = ids.shape[0]
        # each new token's own slot (after the cache) is always visible
        zero = graphc.constant(np.zeros((1, 1), c.dtype), name="zero")
        mask = graphc.concat([mask, graphc.broadcast_to(zero, (B, 1))], axis=1)   # [B,T+1]
        return self._decode_layers(mla_absorbed_batched, ids, cache, pos, mask, P)

    def _decode_layers(self, attention, ids, cache, pos, mask, P):
        """The layers of a decode step (one sequence or a batch: ``attention`` is
        mla_absorbed or mla_absorbed_batched) -> (logits, then each layer's new c_kv and
        k_pe)."""
        c = self.config
        rope = self._rope(pos)
        h = graphc.embedding(P["model.embed_tokens.weight"], ids)
        new = []
        for l in range(c.num_hidden_layers):
            pre = f"model.layers.{l}."
            a, c_kv, k_pe = attention(
                graphc.rmsnorm(h, P[pre + "input_layernorm.weight"], eps=c.rms_norm_eps),
                P, pre + "self_attn.", c, rope, self.softmax_scale,
                cache[2 * l], cache[2 * l + 1], mask)
            new += [c_kv, k_pe]
            h = h + a
            h = h + self._ffn(graphc.rmsnorm(h, P[pre + "post_attention_layernorm.weight"],
                                             eps=c.rms_norm_eps), P, l)
        return (self._head(h, P), *new)

    # -- graphs -----------------------------------------------------------------------------
    def trace(self, seq_len="S", with_cache: bool = False) -> graphc.Graph:
        """The prefill graph for ``seq_len`` tokens (a symbol or an int)."""
        return graphc.trace(lambda ids: self.prefill(ids, with_cache),
                            graphc.spec((seq_len,), "int64", name="ids"),
                            name="deepseek_v2" + ("_prefill" if with_cache else ""))

    def trace_layer(self, layer: int = 0, seq_len="S") -> graphc.Graph:
        """The graph of one decoder layer (prefill, positions 0..S-1): x [S, H] -> [S, H]."""
        c = self.config

        def layer_fn(x):
            P = self._constants()
            pre = f"model.layers.{layer}."
            rope = self._rope(graphc.constant(self.positions, name="positions")[:x.shape[0]])
            a = mla_full(graphc.rmsnorm(x, P[pre + "input_layernorm.weight"],
                                        eps=c.rms_norm_eps),
                         P, pre + "self_attn.", c, rope, self.softmax_scale)[0]
            h = x + a
            return h + self._ffn(graphc.rmsnorm(h, P[pre + "post_attention_layernorm.weight"],
                                                eps=c.rms_norm_eps), P, layer)
        return graphc.trace(layer_fn, graphc.spec((seq_len, c.hidden_size), c.dtype, name="x"),
                            name=f"deepseek_v2_layer{layer}")

    def trace_decode(self, cache_len="T", padded: bool = False) -> graphc.Graph:
        """The decode-step graph: one new token after ``cache_len`` cached tokens; with
        ``padded``, after ``cache_len`` cache slots, inputs ``pos`` [1] and ``mask``
        [cache_len] at the end (see :meth:`decode`)."""
        c = self.config
        specs = [graphc.spec((1,), "int64", name="ids")]
        for l in range(c.num_hidden_layers):
            specs.append(graphc.spec((cache_len, c.kv_lora_rank), c.dtype, name=f"c_kv{l}"))
            specs.append(graphc.spec((cache_len, c.qk_rope_head_dim), c.dtype, name=f"k_pe{l}"))
        if not padded:
            return graphc.trace(self.decode, *specs, name="deepseek_v2_decode")
        specs += [graphc.spec((1,), "int64", name="pos"),
                  graphc.spec((cache_len,), c.dtype, name="mask")]
        return graphc.trace(lambda *a: self.decode(*a[:-2], pos=a[-2], mask=a[-1]), *specs,
                            name="deepseek_v2_decode_padded")

    def trace_decode_batched(self, batch="B", cache_len="T") -> graphc.Graph:
        """The batched decode-step graph (see :meth:`decode_batched`): inputs ``ids [B]``,
        per layer ``c_kv{l} [B, T, d_c]`` and ``k_pe{l} [B, T, d_r]``, ``pos [B]``,
        ``mask [B, T]``; B and T symbols by default, so one compile serves every batch
        size and cache bucket."""
        c = self.config
        specs = [graphc.spec((batch,), "int64", name="ids")]
        for l in range(c.num_hidden_layers):
            specs.append(graphc.spec((batch, cache_len, c.kv_lora_rank), c.dtype,
                                     name=f"c_kv{l}"))
            specs.append(graphc.spec((batch, cache_len, c.qk_rope_head_dim), c.dtype,
                                     name=f"k_pe{l}"))
        specs += [graphc.spec((batch,), "int64", name="pos"),
                  graphc.spec((batch, cache_len), c.dtype, name="mask")]
        return graphc.trace(self.decode_batched, *specs, name="deepseek_v2_decode_batched")

    def compiled(self, which: str, backend: str = "reference", **options):
        """The executable for 'forward', 'prefill' (with cache outputs), 'decode' (the
        padded decode step that ``generate`` runs for one prompt) or 'decode_batched' (the
        batched step it runs for a list of prompts, :meth:`trace_decode_batched`)."""
        return self.compile(backend, (which,), **options)[0]

    def compile(self, backend: str = "reference",
                which=("forward", "prefill", "decode"), **options) -> list:
        """The executables ``which`` (see :meth:`compiled`), compiling those not compiled
        yet together (graphc.compile_many: on the numba backend their kernels compile in
        one parallel batch)."""
        if isinstance(which, str):
            which = (which,)
        keys = [(w, backend, tuple(sorted(options.items()))) for w in which]
        todo = [k for k in dict.fromkeys(keys) if k not in self._compiled]
        if todo:
            traces = {"forward": lambda: self.trace(),
                      "prefill": lambda: self.trace(with_cache=True),
                      "decode": lambda: self.trace_decode(padded=True),
                      "decode_batched": lambda: self.trace_decode_batched()}
            for w, *_ in todo:
                if w not in traces:
                    raise graphc.InputError(f"no executable {w!r}: forward, prefill, "
                                            "decode or decode_batched")
            exes = graphc.compile_many([traces[w]() for w, *_ in todo], backend=backend,
                                       **options)
            self._compiled.update(zip(todo, exes))
        return [self._compiled[k] for k in keys]

    # -- inference --------------------------------------------------------------------------
    def _check_ids(self, ids, what="ids") -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise graphc.InputError(f"{what} must be a non-empty 1-D integer array, got "
                                    f"{ids.dtype}{list(ids.shape)}")
        return ids.astype(np.int64)

    def forward(self, ids, backend: str = "reference", **options) -> np.ndarray:
        """Logits [S, vocab] for token ids [S] (prefill, causal)."""
        return self.compiled("forward", backend, **options)(self._check_ids(ids))

    __call__ = forward

    def generate(self, prompt_ids, max_new_tokens: int, backend: str = "reference",
                 eos_token_id: int | None = None, return_logits: bool = False, **options):
        """Greedy decoding: prefill the prompt, then one compiled decode step per token with
        the compressed cache (post-norm c_kv and rotated k_pe per token and layer). Returns
        prompt + new ids (and, with return_logits, the logits [n_new, vocab] that chose each
        new token). Stops early at ``eos_token_id`` when one is given.

        Batched: ``prompt_ids`` a list (or tuple) of 1-D prompts, of any lengths, decoded
        together: each prompt is prefilled alone, then one batched decode step
        (``compiled("decode_batched")``) makes the next token of every unfinished
        sequence at once, each with its own cache, position and mask (padding is never
        attended). Returns a list with one int64 array per prompt, in order (prompt + new
        ids); with return_logits, a list of ``(ids, logits [n_new, vocab])`` pairs, one
        per prompt (what a single prompt returns, per prompt). A sequence that makes
        ``eos_token_id`` stops there (eos included), the others go on; generation ends
        when every sequence has stopped or made ``max_new_tokens``. The tokens are those
        of generating each prompt alone. (A 2-D array is not a batch: it is refused, as
        before; a list of ints is one prompt.)"""
        if _is_batch(prompt_ids):
            return self._generate_batched(prompt_ids, max_new_tokens, backend, eos_token_id,
                                          return_logits, **options)
        c = self.config
        if options.get("float64") and c.dtype != "float64":
            # The cache is fed back as graph inputs, which the oracle mode would take in
            # the declared float32: run a float64 copy of the model instead.
            return self._float64_twin().generate(prompt_ids, max_new_tokens, backend,
                                                 eos_token_id, return_logits, **options)
        ids = list(self._check_ids(prompt_ids, "prompt_ids"))
        total = len(ids) + max_new_tokens
        if total > c.max_position_embeddings:
            raise graphc.InputError(f"prompt + max_new_tokens = {total} exceeds "
                                    f"max_position_embeddings {c.max_position_embeddings}")
        steps = []
        if max_new_tokens <= 0:
            return (np.array(ids), np.zeros((0, c.vocab_size), c.dtype)) if return_logits \
                else np.array(ids)
        self.compile(backend, ("prefill", "decode"), **options)     # one batch
        logits, cache, mask = self._prefill(ids, total, backend, **options)
        n = len(ids)
        step = self.compiled("decode", backend, **options)
        for _ in range(max_new_tokens):
            nxt = int(np.argmax(logits))
            ids.append(nxt)
            steps.append(logits)
            if len(steps) == max_new_tokens or (eos_token_id is not None
                                                 and nxt == eos_token_id):
                break
            T = _bucket(n)
            res = step(np.array([nxt], np.int64), *(b[:T] for b in cache),
                       np.array([n], np.int64), mask[:T])
            logits = res[0][0]
            for b, row in zip(cache, res[1:]):
                b[n] = row[0]
            mask[n] = 0
            n += 1
        out_ids = np.array(ids, np.int64)
        return (out_ids, np.stack(steps)) if return_logits else out_ids

    def _generate_batched(self, prompts, max_new_tokens: int, backend: str,
                          eos_token_id, return_logits: bool, **options) -> list:
        """``generate`` for a list of prompts (see there)."""
        c = self.config
        if options.get("float64") and c.dtype != "float64":
            return self._float64_twin()._generate_batched(prompts, max_new_tokens, backend,
                                                          eos_token_id, return_logits,
                                                          **options)
        if len(prompts) == 0:
            raise graphc.InputError("prompt_ids is an empty list: give one prompt (a 1-D "
                                    "integer array) or a list of them")
        prompts = [self._check_ids(p, f"prompt {i} of prompt_ids")
                   for i, p in enumerate(prompts)]
        for i, p in enumerate(prompts):
            total = len(p) + max_new_tokens
            if total > c.max_position_embeddings:
                raise graphc.InputError(
                    f"prompt {i} of prompt_ids ({len(p)} tokens) + max_new_tokens "
                    f"{max_new_tokens} = {total} exceeds max_position_embeddings "
                    f"{c.max_position_embeddings}")
        ids = [list(p) for p in prompts]
        steps = [[] for _ in prompts]

        def result():
            out = [np.array(x, np.int64) for x in ids]
            if not return_logits:
                return out
            return [(o, np.stack(s) if s else np.zeros((0, c.vocab_size), c.dtype))
                    for o, s in zip(out, steps)]
        if max_new_tokens <= 0:
            return result()
        prefill, step = self.compile(backend, ("prefill", "decode_batched"), **options)
        # Batch buffers, row r for sequence active[r]: the cache of every layer
        # [B, T, d] and the mask [B, T] (zeros and -inf past each sequence's tokens: an
        # empty slot must not hold NaN, see _prefill). T is the bucket of the longest
        # sequence's tokens; the buffers grow (a copy) when it does.
        dt = np.dtype(c.dtype)
        n = np.array([len(p) for p in prompts], np.int64)        # tokens cached, per row
        T = _bucket(int(n.max()))
        widths = [c.kv_lora_rank, c.qk_rope_head_dim] * c.num_hidden_layers
        cache = [np.zeros((len(prompts), T, w), dt) for w in widths]
        mask = np.full((len(prompts), T), -np.inf, dt)
        logits = np.empty((len(prompts), c.vocab_size), dt)
        for i, p in enumerate(prompts):                 # prefill each prompt alone
            out = prefill(p)
            logits[i] = out[0][-1]
            for buf, a in zip(cache, out[1:]):
                buf[i, :len(p)] = a
            mask[i, :len(p)] = 0
        active = list(range(len(prompts)))
        while True:
            nxt = np.argmax(logits, axis=-1)
            keep = []
            for r, i in enumerate(active):
                ids[i].append(int(nxt[r]))
                steps[i].append(logits[r])
                if not (len(steps[i]) == max_new_tokens
                        or (eos_token_id is not None and nxt[r] == eos_token_id)):
                    keep.append(r)
            if not keep:
                return result()
            if len(keep) < len(active):          # drop the finished rows (one copy)
                T = _bucket(int(n[keep].max()))
                cache = [b[keep, :T] for b in cache]
                mask, n, nxt = mask[keep, :T], n[keep], nxt[keep]
                active = [active[r] for r in keep]
            res = step(nxt.astype(np.int64), *cache, n, mask)
            logits = res[0]
            T = _bucket(int(n.max()) + 1)
            if T > mask.shape[1]:                # the longest sequence left the bucket
                grown = []
                for b in cache:
                    g = np.zeros((b.shape[0], T, b.shape[2]), dt)
                    g[:, :b.shape[1]] = b
                    grown.append(g)
                g = np.full((mask.shape[0], T), -np.inf, dt)
                g[:, :mask.shape[1]] = mask
                cache, mask = grown, g
            rows = np.arange(len(active))
            for b, new in zip(cache, res[1:]):
                b[rows, n] = new
            mask[rows, n] = 0
            n = n + 1

    def _prefill(self, ids, total: int, backend, **options):
        """Generation's first step on the prompt ``ids``: (the next token's logits, the
        cache buffers, the mask) with room for ``total`` tokens."""
        c = self.config
        out = self.compiled("prefill", backend, **options)(np.array(ids, np.int64))
        logits, lat = out[0][-1], out[1:]
        n = len(ids)
        # Preallocated cache (zeros: an empty slot must not hold NaN, whose weight 0 would
        # still poison p @ c_kv); the decode step reads a bucket [:T] of it, T a power of
        # two >= the tokens so far, with a mask row hiding the empty slots.
        cache = []
        dt = np.dtype(c.dtype)
        rows = _bucket(total)
        for a in lat:
            buf = np.zeros((rows, a.shape[1]), dt)
            buf[:n] = a
            cache.append(buf)
        mask = np.full(rows, -np.inf, dt)
        mask[:n] = 0
        return logits, cache, mask

    def decode_inputs(self, prompt_ids, backend: str = "reference", **options) -> tuple:
        """The arrays the decode step (``compiled("decode", backend)``) takes for the
        first new token after ``prompt_ids``, as :meth:`generate` makes them (it runs the
        prefill): e.g. ``model.compiled("decode", "numba").profile(*inputs)``. With
        ``float64=True`` on a float32 model, like generate: the float64 copy's inputs."""
        c = self.config
        if options.get("float64") and c.dtype != "float64":
            return self._float64_twin().decode_inputs(prompt_ids, backend, **options)
        ids = list(self._check_ids(prompt_ids, "prompt_ids"))
        if len(ids) + 1 > c.max_position_embeddings:
            raise graphc.InputError(f"a prompt of {len(ids)} tokens leaves no position for "
                                    f"a new one (max_position_embeddings "
                                    f"{c.max_position_embeddings})")
        logits, cache, mask = self._prefill(ids, len(ids) + 1, backend, **options)
        n = len(ids)
        T = _bucket(n)
        return (np.array([int(np.argmax(logits))], np.int64), *(b[:T] for b in cache),
                np.array([n], np.int64), mask[:T])

    def _float64_twin(self) -> "DeepseekV2":
        if self._twin is None:
            self._twin = DeepseekV2(replace(self.config, dtype="float64"),
                                    {k: v.astype(np.float64) for k, v in self.params.items()})
            self._twin.inv_freq = self.inv_freq.astype(np.float64)   # same frequencies
        return self._twin

    # -- sizes ------------------------------------------------------------------------------
    def cache_bytes_per_token(self) -> dict:
        """Bytes of decode cache per token: MLA (c_kv + k_pe per layer) against what
        standard multi-head attention would keep (K and V of every head per layer)."""
        return cache_bytes_per_token(self.config)

    def num_params(self) -> int:
        return int(sum(a.size for a in self.params.values()))

    def __repr__(self) -> str:
        return f"DeepseekV2({self.config}, {self.num_params() / 1e6:.1f}M parameters)"


def _is_batch(prompt_ids) -> bool:
    """A list or tuple that is empty or holds a non-scalar is a batch of prompts (a list
    of ints is one prompt)."""
    return isinstance(prompt_ids, (list, tuple)) and (
        len(prompt_ids) == 0 or any(np.ndim(p) != 0 for p in prompt_ids))


def _bucket(n: int) -> int:
    """Cache slots the decode step sees for n tokens: a power of two >= n (at least 16)."""
    return max(16, 1 << max(n - 1, 0).bit_length())


def cache_bytes_per_token(config: DeepseekV2Config) -> dict:
    """Decode-cache bytes per token, all layers: ``mla`` (c_kv and k_pe: d_c + d_r per
    layer), ``mha`` (standard multi-head attention: K and V of every head, 2 n_h d_h with
    d_h = v_head_dim, the comparison of the DeepSeek-V2 report), ``expanded`` (MLA's own
    keys and values materialised: n_h (d_n + d_r + d_v)), and ``ratio`` = mha / mla."""
    c = config
    item = np.dtype(c.dtype).itemsize
    L, nh = c.num_hidden_layers, c.num_attention_heads
    mla = L * (c.kv_lora_rank + c.qk_rope_head_dim) * item
    mha = L * 2 * nh * c.v_head_dim * item
    expanded = L * nh * (c.qk_head_dim + c.v_head_dim) * item
    return {"mla": mla, "mha": mha, "expanded": expanded, "ratio": mha / mla}


def random(config: DeepseekV2Config | None = None, seed: int = 0) -> DeepseekV2:
    """A DeepSeek-V2 model with seeded random parameters (no checkpoint)."""
    config = config or preset("tiny")
    return DeepseekV2(config, init_params(config, seed))


def load(path, dtype: str = "float32", check_memory: bool = True,
         allow_nonfinite: bool = False, max_bytes: int | None = None) -> DeepseekV2:
    """Load a Hugging Face checkpoint directory (config.json + *.safetensors; sharded with
    model.safetensors.index.json). Routed experts may be stored per expert or fused.
    Raises :class:`graphc.CheckpointError` naming any bad config field (with its value),
    missing, extra or misshapen tensor, malformed file or NaN/infinite weight
    (``allow_nonfinite=True`` loads those anyway), or, before reading any, when the
    parameters would not fit the memory available (``check_memory=False`` skips that
    check; ``max_bytes`` sets the limit). See ``deepseek_v2_checkpoint``."""
    from .deepseek_v2_checkpoint import load_checkpoint
    config, params = load_checkpoint(path, dtype, check_memory, allow_nonfinite, max_bytes)
    return DeepseekV2(config, params)
