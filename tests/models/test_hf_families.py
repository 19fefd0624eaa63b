"""GPT-2, BERT (padded) and Llama (GQA, rotate-half RoPE) ported to graphc
(graphc.models.gpt2 / bert / llama) against `transformers` (the `compare` extra; skipped
without it): tiny random models built from config objects (no downloads), weights
loaded from their state_dicts, one trace over symbolic (B, S) compiled once per backend
and run at (B, S) = (1, 5) and (3, 17); and the attention of every layer fused into one
attention step after O2."""
import numpy as np
import pytest

import graphc
from graphc.ir.dims import Sym, prod
from graphc.lower.program import AttentionStep
from graphc.models import bert, gpt2, llama

torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
transformers = pytest.importorskip("transformers", reason="needs the 'compare' extra "
                                   "(transformers)")
pytestmark = pytest.mark.compare

SIZES = [(1, 5), (3, 17)]
V = 97
TOL = 1e-4          # relative norm error in float32 (measured ~3e-7 .. 8e-7)


def _backends():
    # the quick suite runs the families on the reference backend; compiling each on numba
    # and cupy-emu (5-15 CPU s apiece) is in the slow suite
    out = ["reference", pytest.param("numba", marks=pytest.mark.slow),
           pytest.param("cupy-emu", marks=pytest.mark.slow)]
    return out + [pytest.param("cupy", marks=pytest.mark.gpu)]


@pytest.fixture(params=_backends())
def backend(request):
    if request.param == "cupy":
        from graphc.backends.cupy_gpu import gpu_available
        ok, why = gpu_available()
        if not ok:
            pytest.skip(f"no GPU: {why}")
    return request.param


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def well_scaled(m, fan_in_axis=-1, seed=0):
    """Weights of unit-ish activations (the default init is tiny: near-uniform softmaxes
    that would hide attention mistakes): norms' gains ~1, matrices ~N(0, 1/fan_in)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1:
                gain = name.endswith("weight") and ("ln" in name or "norm" in name.lower())
                p.copy_((1.0 if gain else 0.0) + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[fan_in_axis] ** 0.5)
    return m.eval()


# -- tiny transformers models --------------------------------------------------------------
def hf_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=V, n_positions=64,
                     bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    return well_scaled(GPT2LMHeadModel(cfg), fan_in_axis=0)   # Conv1D weights: [in, out]


def hf_bert():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, vocab_size=V, max_position_embeddings=64,
                     pad_token_id=0, attn_implementation="eager")
    return well_scaled(BertModel(cfg))


def hf_llama(kv_heads=2, **extra):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=kv_heads,
                      intermediate_size=96, num_hidden_layers=2, vocab_size=V,
                      max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                      eos_token_id=2, attn_implementation="eager", **extra)
    return well_scaled(LlamaForCausalLM(cfg))


_HF = {}


def hf_model(name):
    """One transformers model per family variant for the module (built once)."""
    if name not in _HF:
        _HF[name] = {"gpt2": hf_gpt2, "bert": hf_bert, "llama_gqa2": lambda: hf_llama(2),
                     "llama_mqa": lambda: hf_llama(1)}[name]()
    return _HF[name]


_PORT = {}


def port(name):
    if name not in _PORT:
        mod = bert if name == "bert" else gpt2 if name == "gpt2" else llama
        _PORT[name] = mod.from_hf(hf_model(name))
    return _PORT[name]


_EXE = {}


def compiled(name, backend):
    """One compile per (family, backend), shared by the comparison and the fusion test."""
    key = (name, backend)
    if key not in _EXE:
        _EXE[key] = port(name).compile(backend)
    return _EXE[key]


def ids_for(B, S, seed=0):
    return np.random.default_rng(1000 * B + S + seed).integers(0, V, (B, S))


def padding_mask(B, S, seed=0):
    """Right-padded attention_mask [B, S]: the first row full, the others 1..S-1 tokens."""
    rng = np.random.default_rng(seed + B * S)
    lens = [S] + [int(n) for n in rng.integers(1, S, B - 1)]
    return (np.arange(S)[None] < np.array(lens)[:, None]).astype(np.int64)


def run_hf(m, *arrays):
    with torch.no_grad():
        out = m(*[torch.from_numpy(np.asarray(a)) for a in arrays])
    r = out.logits if hasattr(out, "logits") else out.last_hidden_state
    return r.double().numpy()




# -- logits / hidden states against transformers -------------------------------------------
def test_gpt2_matches_transformers(backend):
    hf = hf_model("gpt2")
    exe = compiled("gpt2", backend)
    for B, S in SIZES:
        ids = ids_for(B, S)
        got = exe(ids)
        assert got.shape == (B, S, V) and got.dtype == np.float32
        assert rel(got, run_hf(hf, ids)) < TOL, (B, S)


def test_bert_padded_matches_transformers(backend):
    hf = hf_model("bert")
    exe = compiled("bert", backend)
    for B, S in SIZES:
        ids, mask = ids_for(B, S), padding_mask(B, S)
        want = run_hf(hf, ids, mask)
        got = exe(ids, mask)
        assert got.shape == (B, S, 64) and got.dtype == np.float32
        keep = mask.astype(bool)                   # the positions that hold tokens
        assert rel(got[keep], want[keep]) < TOL, (B, S)


@pytest.mark.parametrize("variant", ["llama_gqa2", "llama_mqa"])
def test_llama_matches_transformers(variant, backend):
    hf = hf_model(variant)
    exe = compiled(variant, backend)
    for B, S in SIZES:
        ids = ids_for(B, S)
        got = exe(ids)
        assert got.shape == (B, S, V) and got.dtype == np.float32
        assert rel(got, run_hf(hf, ids)) < TOL, (B, S)


def test_llama_right_padded_matches_transformers(backend):
    """attention_mask zeros at the end of rows: causal + padding mask in one attention
    step; the positions holding tokens match transformers (its positions are 0..S-1 in
    every row without position_ids, as graphc's)."""
    hf = hf_model("llama_gqa2")
    key = ("llama_gqa2_padded", backend)
    if key not in _EXE:
        _EXE[key] = port("llama_gqa2").compile(backend, padded=True)
    exe = _EXE[key]
    for B, S in SIZES:
        ids, mask = ids_for(B, S), padding_mask(B, S)
        keep = mask.astype(bool)
        got = exe(ids, mask)
        assert rel(got[keep], run_hf(hf, ids, mask)[keep]) < TOL, (B, S)
    if backend != "reference":
        steps, body = attention_steps(exe)
        assert len(steps) == 2 and "softmax" not in body
        assert all(st.causal and st.mask is not None for st in steps)


# -- every layer's attention is one fused attention step after O2 ---------------------------
def attention_steps(exe):
    body = set()
    for node in exe.graph.nodes.values():
        if node.op == "fused":
            body |= {n.op for n in node.attrs["body"].nodes.values()}
    return [s for s in exe.program.steps if isinstance(s, AttentionStep)], body


# The quick suite compiles BERT (padding mask) on cupy-emu (test_natural_ports.py compiles
# a GQA + rope port on numba there); the other seven (family, backend) pairs are slow.
@pytest.mark.parametrize("name, causal, masked, fused_backend", [
    pytest.param(name, causal, masked, backend, id=f"{name}-{causal}-{masked}-{backend}",
                 marks=[] if (name, backend) == ("bert", "cupy-emu")
                 else [pytest.mark.slow])
    for backend in ("numba", "cupy-emu")
    for name, causal, masked in [("gpt2", True, False), ("bert", False, True),
                                 ("llama_gqa2", True, False), ("llama_mqa", True, False)]])
def test_attention_is_fused(name, causal, masked, fused_backend):
    exe = compiled(name, fused_backend)
    steps, body = attention_steps(exe)
    n_layers = 2
    assert len(steps) == n_layers, exe.program
    assert "softmax" not in body, body           # no scores softmax left outside the kernel
    assert "concat" not in body and "repeat" not in body, body   # kv heads read, not copied
    for st in steps:
        assert st.causal is causal
        assert (st.mask is not None) is masked
    if name.startswith("llama"):                 # k and v are read with their KV heads
        c = hf_model(name).config
        kv_elems = Sym.of("B") * Sym.of("S") * c.num_key_value_heads * (
            c.hidden_size // c.num_attention_heads)
        for st in steps:
            for view in (st.k, st.v):                # the operand, before its view chain
                shape = exe.graph.nodes[st.operands[view.operand]].type.shape
                assert prod(shape) == kv_elems, shape


# -- float64: the same formulas as transformers ---------------------------------------------
def test_gpt2_and_bert_float64_match_transformers_float64():
    """The float64 oracle against the float64 transformers models: the same computation
    (no float32 step anywhere on either side), so agreement to rounding."""
    for name in ("gpt2", "bert"):
        hf64 = (hf_gpt2() if name == "gpt2" else hf_bert()).double()
        m = (gpt2 if name == "gpt2" else bert).from_hf(hf64, dtype="float64")
        exe = m.compile("reference")
        for B, S in SIZES:
            ids = ids_for(B, S)
            args = (ids,) if name == "gpt2" else (ids, padding_mask(B, S))
            got = exe(*args)
            assert got.dtype == np.float64
            want = run_hf(hf64, *args)
            if name == "bert":
                keep = args[1].astype(bool)
                got, want = got[keep], want[keep]
            assert rel(got, want) < 1e-12, (name, B, S)


# -- more of each family (reference backend: cheap) -----------------------------------------
def test_bert_token_types_and_pooler():
    hf = hf_model("bert")
    m = port("bert")
    exe = m.compile("reference", token_types=True, pooled=True)
    ids, mask = ids_for(3, 17), padding_mask(3, 17)
    types = (np.arange(17)[None] >= 8).astype(np.int64).repeat(3, 0)
    with torch.no_grad():
        out = hf(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                 token_type_ids=torch.from_numpy(types))
    hidden, pooled = exe(ids, mask, types)
    keep = mask.astype(bool)
    assert rel(hidden[keep], out.last_hidden_state.numpy()[keep]) < TOL
    assert rel(pooled, out.pooler_output.numpy()) < TOL


def test_llama_tied_embeddings_and_llama3_rope():
    rp = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
    hf = hf_llama(2, tie_word_embeddings=True, rope_parameters=rp)
    m = llama.from_hf(hf)
    # the frequencies from the config alone are transformers' (llama3 scaling)
    np.testing.assert_allclose(llama.rope_inv_freq(m.config), hf.model.rotary_emb.inv_freq,
                               rtol=1e-6)
    sd_model = llama.from_state_dict(hf.config, hf.state_dict())
    exe = m.compile("reference")
    exe2 = sd_model.compile("reference")
    for B, S in SIZES:
        ids = ids_for(B, S)
        want = run_hf(hf, ids)
        assert rel(exe(ids), want) < TOL
        assert rel(exe2(ids), want) < TOL


def test_llama_attention_bias_and_hidden_states():
    from transformers import LlamaModel
    hf = hf_llama(2, attention_bias=True, mlp_bias=True)
    base = LlamaModel(hf.config).eval()
    base.load_state_dict({k[len("model."):]: v for k, v in hf.state_dict().items()
                          if k.startswith("model.")})
    m = llama.from_hf(base)
    assert not m.has_lm_head
    exe = m.compile("reference")
    for B, S in SIZES:
        ids = ids_for(B, S)
        assert rel(exe(ids), run_hf(base, ids)) < TOL


def test_state_dict_errors_name_the_tensors():
    sd = dict(hf_model("gpt2").state_dict())
    del sd["transformer.h.1.mlp.c_fc.bias"]
    sd["transformer.h.0.extra"] = torch.zeros(3)
    with pytest.raises(graphc.CheckpointError, match=r"missing \['h\.1\.mlp\.c_fc\.bias'\]"
                                                     r".*unexpected \['h\.0\.extra'\]"):
        gpt2.from_state_dict(hf_model("gpt2").config, sd)
    sd = dict(hf_model("llama_gqa2").state_dict())
    sd["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(64, 64)
    with pytest.raises(graphc.CheckpointError, match=r"k_proj\.weight \[64, 64\] "
                                                     r"\(expected \[32, 64\]\)"):
        llama.from_state_dict(hf_model("llama_gqa2").config, sd)
    with pytest.raises(graphc.AttrError, match="position_embedding_type"):
        bert.BertConfig.from_hf({**hf_model("bert").config.to_dict(),
                                 "position_embedding_type": "relative_key"})
