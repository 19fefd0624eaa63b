"""GPT-2, BERT (padded), Llama (GQA, RoPE), Qwen2 (qkv bias), Gemma 2 (eager attention with
a soft cap), Mixtral and Qwen2-MoE (routed experts through transformers' grouped GEMM),
tiny and random, through
graphc.from_torch (one export with dynamic batch and sequence, one compile, several
sizes) and through torch.compile(backend=graphc...), against eager torch; the attention
of every layer fused into one attention step on the compiled backends."""
import numpy as np
import pytest

import graphc

torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
pytest.importorskip("transformers", reason="needs the 'compare' extra (transformers)")
pytestmark = pytest.mark.compare

from graphc.lower.program import AttentionStep  # noqa: E402

from torch_hf import N_LAYERS, Hidden, inputs, make, rel  # noqa: E402

FAMILIES = ["gpt2", "bert", "llama", "qwen2", "gemma2", "mixtral", "qwen2_moe"]
MOE = {"mixtral", "qwen2_moe"}
SIZES = [(1, 5), (3, 17), (2, 33)]
TOL = 1e-4
_GRAPHS = {}


def imported(name):
    if name not in _GRAPHS:
        from torch.export import Dim
        model = Hidden(make(name))
        B, S = Dim("B", min=1, max=8), Dim("S", min=2, max=64)
        ids = torch.zeros((2, 8), dtype=torch.long) + 3
        mask = torch.ones((2, 8), dtype=torch.long)
        g = graphc.from_torch(model, (ids, mask), dynamic_shapes=({0: B, 1: S}, {0: B, 1: S}))
        _GRAPHS[name] = (model, g)
    return _GRAPHS[name]


def eager(model, ids, mask):
    with torch.no_grad():
        return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


def check_sizes(model, run, rng, sizes):
    for B, S in sizes:
        ids, mask = inputs(rng, B, S)
        keep = mask.astype(bool)
        got = run(ids, mask)
        err = rel(got[keep], eager(model, ids, mask)[keep])
        assert err < TOL, (B, S, err)


def attention_steps(exe):
    """The program's attention steps, and the softmaxes left in it (fused or not) as the
    sizes of the axes they normalise."""
    softmaxes = []
    for node in exe.graph.nodes.values():
        inner = node.attrs["body"].nodes.values() if node.op == "fused" else [node]
        softmaxes += [n.type.shape[n.attrs["axis"]] for n in inner
                      if n.op == "softmax"]
    return [s for s in exe.program.steps if isinstance(s, AttentionStep)], softmaxes


@pytest.mark.slow   # ~5 s a family (quick suite: tests/frontend/torch/test_from_torch.py)
@pytest.mark.parametrize("name", FAMILIES)
def test_from_torch_reference(name, rng):
    model, g = imported(name)
    assert {"B", "S"} <= set(g.meta["torch"]["dims"])
    assert g.meta["torch"]["dims"]["S"] == (2, 64)
    exe = graphc.compile(g, backend="reference")
    check_sizes(model, exe, rng, SIZES)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_from_torch_numba_fused(name, rng):
    """One numba compile serves every (B, S); each layer's attention is one fused step."""
    model, g = imported(name)
    exe = graphc.compile(g, backend="numba")
    check_sizes(model, exe, rng, SIZES)
    steps, softmaxes = attention_steps(exe)
    assert len(steps) == N_LAYERS, exe.program
    # no attention softmax left: only the MoE routers' (over the 4 experts, one a layer)
    assert softmaxes == ([4] * N_LAYERS if name in MOE else []), softmaxes
    assert all(st.mask is not None for st in steps)     # the padding mask is read


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_from_torch_cupy_emu(name, rng):
    model, g = imported(name)
    exe = graphc.compile(g, backend="cupy-emu")
    check_sizes(model, exe, rng, [(2, 9)])
    steps, _ = attention_steps(exe)
    assert len(steps) == N_LAYERS


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_torch_compile_numba(name, rng):
    """torch.compile(dynamic=True): new batch and sequence sizes reuse the compiled graphs."""
    model = Hidden(make(name))
    calls = []
    inner = graphc.torch_backend(backend="numba")

    def counting(gm, example_inputs):
        calls.append(gm)
        return inner(gm, example_inputs)

    torch._dynamo.reset()
    fast = torch.compile(model, backend=counting, dynamic=True)

    def run(ids, mask):
        with torch.no_grad():
            return fast(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    check_sizes(model, run, rng, [(2, 9)])
    n = len(calls)
    check_sizes(model, run, rng, [(3, 17), (2, 33)])
    assert len(calls) == n, "a new (batch, sequence) recompiled"


def _lm(name):
    """A tiny causal LM of the family with its head (generate needs one), kv cache on."""
    import transformers
    from torch_hf import V, well_scaled
    if name == "gpt2":
        cfg = transformers.GPT2Config(n_embd=64, n_layer=N_LAYERS, n_head=4, n_positions=64,
                                      vocab_size=V, bos_token_id=0, eos_token_id=0,
                                      attn_implementation="sdpa")
        return well_scaled(transformers.GPT2LMHeadModel(cfg))
    cfg = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=N_LAYERS,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=128, max_position_embeddings=64,
                                   vocab_size=V, attn_implementation="sdpa")
    return well_scaled(transformers.LlamaForCausalLM(cfg))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_torch_compile_generate_with_kv_cache(name, rng):
    """model.generate with a torch.compile'd forward (kv cache on, GQA for Llama: the
    cache's key and value lengths are separate dynamo symbols, unified by the importer)
    gives eager's tokens; the prefill and decode graphs compile once for every length."""
    m = _lm(name)
    calls = []
    inner = graphc.torch_backend(backend="numba")

    def counting(gm, example_inputs):
        calls.append(gm)
        return inner(gm, example_inputs)

    ids = torch.from_numpy(rng.integers(0, 97, (1, 6)).astype(np.int64))
    longer = torch.from_numpy(rng.integers(0, 97, (1, 9)).astype(np.int64))
    with torch.no_grad():
        want = m.generate(ids, max_new_tokens=10, do_sample=False)
        want2 = m.generate(longer, max_new_tokens=6, do_sample=False)
        torch._dynamo.reset()
        eager_forward = m.forward
        m.forward = torch.compile(eager_forward, backend=counting, dynamic=True)
        try:
            got = m.generate(ids, max_new_tokens=10, do_sample=False)
            n = len(calls)
            got2 = m.generate(longer, max_new_tokens=6, do_sample=False)
        finally:
            m.forward = eager_forward
    assert torch.equal(got, want), (got, want)
    assert torch.equal(got2, want2), (got2, want2)
    assert len(calls) == n, f"a new prompt length recompiled ({n} -> {len(calls)})"


@pytest.mark.slow
def test_from_torch_of_a_model_returning_a_cache_says_what_to_do():
    """An HF causal LM exported as it is returns a DynamicCache torch.export cannot
    flatten: the error says to pass use_cache=False, and with it the logits match."""
    from torch.export import Dim
    from graphc.frontend.torch import TorchImportError
    m = _lm("gpt2")
    ids = torch.zeros((2, 8), dtype=torch.long) + 3
    dims = {0: Dim("B", max=8), 1: Dim("S", max=63)}
    with pytest.raises(TorchImportError, match=r"use_cache': False"):
        graphc.from_torch(m, (ids,), dynamic_shapes=(dims,))
    g = graphc.from_torch(m, (ids,), dynamic_shapes={"input_ids": dims, "use_cache": None},
                          kwargs={"use_cache": False})
    x = np.random.default_rng(1).integers(0, 97, (3, 11))
    with torch.no_grad():
        want = m(torch.from_numpy(x)).logits.numpy()
    assert rel(graphc.compile(g)(x), want) < TOL


def _encoder(name):
    """A ViT (a patch-embedding Conv2d), Whisper's audio encoder (two Conv1d, the second
    strided) or wav2vec2 (strided Conv1d over raw audio, GroupNorm, a grouped and
    weight-normed positional Conv1d) with its input, tiny and random."""
    import transformers
    from torch_hf import well_scaled
    if name == "vit":
        cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=N_LAYERS,
                                     num_attention_heads=4, intermediate_size=128,
                                     image_size=32, patch_size=8, attn_implementation="sdpa")
        return (well_scaled(transformers.ViTModel(cfg, add_pooling_layer=False)),
                lambda r, B: r.standard_normal((B, 3, 32, 32)).astype(np.float32))
    if name == "wav2vec2":
        cfg = transformers.Wav2Vec2Config(
            hidden_size=32, num_hidden_layers=N_LAYERS, num_attention_heads=4,
            intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=20,
            attn_implementation="sdpa")
        return (well_scaled(transformers.Wav2Vec2Model(cfg)),
                lambda r, B: r.standard_normal((B, 400)).astype(np.float32))
    cfg = transformers.WhisperConfig(d_model=64, encoder_layers=N_LAYERS, decoder_layers=1,
                                     encoder_attention_heads=4, decoder_attention_heads=4,
                                     encoder_ffn_dim=128, decoder_ffn_dim=128,
                                     num_mel_bins=16, max_source_positions=32, vocab_size=97,
                                     pad_token_id=0, bos_token_id=0, eos_token_id=0,
                                     decoder_start_token_id=0, attn_implementation="sdpa")
    return (well_scaled(transformers.WhisperModel(cfg).encoder),
            lambda r, B: r.standard_normal((B, 16, 64)).astype(np.float32))


class _Last(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x).last_hidden_state


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit", "whisper_encoder", "wav2vec2"])
def test_conv_front_ends_through_both_paths(name, rng):
    """ViT, Whisper's encoder and wav2vec2: the convolutions as GEMMs (grouped too), every layer's attention one
    fused step, one compile for every batch size; torch.compile too."""
    from torch.export import Dim
    enc, draw = _encoder(name)
    model = _Last(enc).eval()
    g = graphc.from_torch(model, (torch.from_numpy(draw(rng, 2)),),
                          dynamic_shapes=({0: Dim("B", max=8)},))
    exe = graphc.compile(g, backend="numba")
    for B in (1, 3):
        x = draw(rng, B)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert rel(exe(x), want) < TOL, B
    steps, _ = attention_steps(exe)
    assert len(steps) == N_LAYERS, exe.program
    torch._dynamo.reset()
    fast = torch.compile(model, backend="graphc", dynamic=True)
    x = draw(rng, 2)
    with torch.no_grad():
        assert rel(fast(torch.from_numpy(x)).numpy(), model(torch.from_numpy(x)).numpy()) < TOL
