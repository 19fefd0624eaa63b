"""Decoder families written the way someone outside the project ports them: the
transformers modelling code (Mistral, Qwen2, Phi-3) transcribed line by line onto graphc's
traced tensors (torch-style .view / .transpose(1, 2) / .unsqueeze / .expand / .chunk /
masked_fill, rotate_half with slices and concat, cos / sin from graphc.arange positions,
repeat_kv with expand + reshape, the causal / sliding-window / padding mask built from
aranges and comparisons), NOT with graphc's own rope or causal_mask ops. Each is matched
against transformers (the `compare` extra) on every backend, and its attention must still
be fused (one attention step per layer, kv heads read without copies)."""
import numpy as np
import pytest

import graphc
from graphc.ir.dims import Sym, prod
from graphc.lower.program import AttentionStep
from graphc.passes.views import chain_shape

torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
transformers = pytest.importorskip("transformers", reason="needs the 'compare' extra "
                                   "(transformers)")
pytestmark = pytest.mark.compare

V = 97
TOL = 1e-4
NEG = float(np.finfo(np.float32).min)      # transformers' masked value


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def well_scaled(m, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1:
                gain = name.endswith("weight") and "norm" in name
                p.copy_((1.0 if gain else 0.0) + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return m.eval()


def hf_model(family):
    common = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, num_hidden_layers=2, vocab_size=V,
                  max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2, attn_implementation="eager")
    if family == "mistral":
        from transformers import MistralConfig, MistralForCausalLM
        return well_scaled(MistralForCausalLM(MistralConfig(sliding_window=6, **common)))
    if family == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM
        return well_scaled(Qwen2ForCausalLM(Qwen2Config(**common)))
    if family == "phi3":
        from transformers import Phi3Config, Phi3ForCausalLM
        common.update(num_key_value_heads=1, rope_parameters={
            "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5})
        return well_scaled(Phi3ForCausalLM(Phi3Config(**common)))
    raise ValueError(family)


# -- the port: transformers' modelling code on traced tensors ------------------------------
class Port:
    def __init__(self, hf):
        self.cfg = hf.config
        self.sd = {k: v.detach().numpy().astype(np.float32) for k, v in hf.state_dict().items()}
        rot = hf.model.rotary_emb
        self.inv_freq = rot.inv_freq.detach().numpy().astype(np.float32)
        self.attention_scaling = float(getattr(rot, "attention_scaling", 1.0))
        self.head_dim = getattr(self.cfg, "head_dim", None) or \
            self.cfg.hidden_size // self.cfg.num_attention_heads
        self.window = getattr(self.cfg, "sliding_window", None)

    def linear(self, x, name):
        y = x @ self.sd[name + ".weight"].T
        b = self.sd.get(name + ".bias")
        return y if b is None else y + b

    def rmsnorm(self, x, name):
        variance = (x * x).mean(-1, keepdim=True)
        return self.sd[name + ".weight"] * (x * graphc.rsqrt(variance + self.cfg.rms_norm_eps))

    def rotary(self, position_ids):                   # [B, S] -> cos, sin [B, S, rot]
        inv = graphc.constant(self.inv_freq)[None, :, None]
        inv_expanded = inv.expand(position_ids.shape[0], -1, 1)
        pos_expanded = position_ids[:, None, :].float()
        freqs = (inv_expanded @ pos_expanded).transpose(1, 2)
        emb = graphc.concat(freqs, freqs, axis=-1)
        return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

    @staticmethod
    def rotate_half(x):
        x1 = x[..., : x.shape[-1] // 2]
        x2 = x[..., x.shape[-1] // 2:]
        return graphc.concat(-x2, x1, axis=-1)

    def apply_rotary(self, q, k, cos, sin):
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        rd = cos.shape[-1]
        q_rot, q_pass = q[..., :rd], q[..., rd:]
        k_rot, k_pass = k[..., :rd], k[..., rd:]
        q_embed = (q_rot * cos) + (self.rotate_half(q_rot) * sin)
        k_embed = (k_rot * cos) + (self.rotate_half(k_rot) * sin)
        if q_pass.shape[-1] != 0:
            q_embed = graphc.concat(q_embed, q_pass, axis=-1)
            k_embed = graphc.concat(k_embed, k_pass, axis=-1)
        return q_embed, k_embed

    @staticmethod
    def repeat_kv(h, n_rep):
        batch, kv_heads, slen, head_dim = h.shape
        if n_rep == 1:
            return h
        h = h[:, :, None, :, :].expand(batch, kv_heads, n_rep, slen, head_dim)
        return h.reshape(batch, kv_heads * n_rep, slen, head_dim)

    def mask(self, S, attention_mask):
        """[B or 1, 1, S, S] additive: 0 where a query may see a key, the float32 min
        elsewhere (causal, within the sliding window, not padding)."""
        i = graphc.arange(S)[:, None]
        j = graphc.arange(S)[None, :]
        allowed = j <= i
        if self.window is not None:
            allowed = allowed & (i - j < self.window)
        allowed = allowed[None, None]
        if attention_mask is not None:
            allowed = allowed & (attention_mask[:, None, None, :] != 0)
        zeros = graphc.where(allowed, 0.0, NEG)
        return zeros.astype("float32")

    def attention(self, x, cos, sin, mask, p):
        c = self.cfg
        input_shape = x.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        H, KV, D = c.num_attention_heads, c.num_key_value_heads, self.head_dim
        if p + "qkv_proj.weight" in self.sd:                      # Phi-3
            qkv = self.linear(x, p + "qkv_proj")
            qp = H * D
            q, k, v = qkv[..., :qp], qkv[..., qp:qp + KV * D], qkv[..., qp + KV * D:]
        else:
            q, k, v = (self.linear(x, p + n) for n in ("q_proj", "k_proj", "v_proj"))
        q = q.view(hidden_shape).transpose(1, 2)
        k = k.view(hidden_shape).transpose(1, 2)
        v = v.view(hidden_shape).transpose(1, 2)
        q, k = self.apply_rotary(q, k, cos, sin)
        k, v = self.repeat_kv(k, H // KV), self.repeat_kv(v, H // KV)
        w = (q @ k.transpose(2, 3)) * D ** -0.5 + mask
        w = w.softmax(dim=-1)
        o = (w @ v).transpose(1, 2).contiguous()
        return self.linear(o.reshape(*input_shape, -1), p + "o_proj")

    def mlp(self, x, p):
        if p + "gate_up_proj.weight" in self.sd:                  # Phi-3
            gate, up = self.linear(x, p + "gate_up_proj").chunk(2, dim=-1)
            return self.linear(up * graphc.silu(gate), p + "down_proj")
        return self.linear(graphc.silu(self.linear(x, p + "gate_proj"))
                           * self.linear(x, p + "up_proj"), p + "down_proj")

    def forward(self, ids, attention_mask=None):
        B, S = ids.shape
        position_ids = graphc.arange(S)[None, :].expand(B, S)
        cos, sin = self.rotary(position_ids)
        mask = self.mask(S, attention_mask)
        x = graphc.embedding(self.sd["model.embed_tokens.weight"], ids)
        for l in range(self.cfg.num_hidden_layers):
            p = f"model.layers.{l}."
            x = x + self.attention(self.rmsnorm(x, p + "input_layernorm"), cos, sin, mask,
                                   p + "self_attn.")
            x = x + self.mlp(self.rmsnorm(x, p + "post_attention_layernorm"), p + "mlp.")
        return self.linear(self.rmsnorm(x, "model.norm"), "lm_head")


FAMILIES = ["mistral", "qwen2", "phi3"]
_CACHE = {}


def quick_on(backend, families=("mistral",)):
    """(family, backend) params: the compiling backends run one family in the quick suite
    and the rest with -m slow (a compile each)."""
    return [pytest.param(f, backend, marks=() if backend == "reference" or f in families
                         else pytest.mark.slow) for f in FAMILIES]


def port(family, padded):
    key = (family, padded)
    if key not in _CACHE:
        hf = hf_model(family)
        p = Port(hf)
        specs = [graphc.spec(("B", "S"), "int64")] * (2 if padded else 1)
        _CACHE[key] = hf, graphc.trace(p.forward, *specs)
    return _CACHE[key]


def inputs(B, S, padded, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, V, size=(B, S)).astype(np.int64)
    if not padded:
        return ids, None
    lens = [S - 3 * b for b in range(B)]                       # right padding
    return ids, (np.arange(S)[None] < np.array(lens)[:, None]).astype(np.int64)


@pytest.mark.parametrize("family,backend", quick_on("reference") + quick_on("numba")
                         + quick_on("cupy-emu", families=("phi3",)))
def test_natural_port_matches_transformers(family, backend):
    hf, g = port(family, padded=False)
    exe = graphc.compile(g, backend=backend)
    for B, S in [(1, 5), (2, 11)]:
        ids, _ = inputs(B, S, False, seed=B * S)
        with torch.no_grad():
            want = hf(torch.from_numpy(ids)).logits.numpy()
        err = rel(exe(ids), want)
        assert err < TOL, (family, backend, B, S, err)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numba", "cupy-emu"])
@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_natural_port_right_padded_matches_transformers(family, backend):
    hf, g = port(family, padded=True)
    exe = graphc.compile(g, backend=backend)
    B, S = 3, 13
    ids, am = inputs(B, S, True, seed=7)
    with torch.no_grad():
        want = hf(torch.from_numpy(ids), attention_mask=torch.from_numpy(am)).logits.numpy()
    got = exe(ids, am)
    keep = am.astype(bool)                    # padded query rows are not compared
    err = rel(got[keep], want[keep])
    assert err < TOL, (family, backend, err)


@pytest.mark.parametrize("family,backend", quick_on("numba") + quick_on("cupy-emu", families=()))
def test_natural_port_attention_is_fused(family, backend):
    hf, g = port(family, padded=False)
    exe = graphc.compile(g, backend=backend)
    steps = [s for s in exe.program.steps if isinstance(s, AttentionStep)]
    body = set()
    for node in exe.graph.nodes.values():
        if node.op == "fused":
            body |= {n.op for n in node.attrs["body"].nodes.values()}
    assert len(steps) == hf.config.num_hidden_layers, exe.program
    assert "softmax" not in body, body                        # the scores stay in the kernel
    c = hf.config
    kv_elems = Sym.of("B") * Sym.of("S") * c.num_key_value_heads * (c.hidden_size
                                                                   // c.num_attention_heads)
    for st in steps:
        for view in (st.k, st.v):             # k and v are read with their KV heads, not copied
            source = exe.graph.nodes[st.operands[view.operand]].type.shape
            shape = chain_shape(source, view.chain)     # (phi3: a view of the fused qkv)
            assert prod(shape) == kv_elems, (source, view.chain)
