"""Models exported by torch.onnx (the dynamo exporter, dynamic batch and sequence): tiny
GPT-2, BERT (attention_mask, padded rows), Llama (GQA, rotate-half RoPE), ViT and
Whisper (Conv front ends) from `transformers`, built from configs (no downloads). Each
is imported once with symbolic (batch, seq), compiled once per backend and run at
several sizes against ONNX Runtime on the same file; after O2 every layer's attention is
one fused attention step. Slow: the exports alone take ~10 s apiece."""
import warnings

import numpy as np
import pytest

import graphc
from graphc.ir.dims import Sym, prod
from graphc.lower.program import AttentionStep

onnx = pytest.importorskip("onnx", reason="needs the 'compare' extra (onnx)")
ort = pytest.importorskip("onnxruntime", reason="needs the 'compare' extra (onnxruntime)")
torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
transformers = pytest.importorskip("transformers", reason="needs the 'compare' extra")
pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
pytestmark = [pytest.mark.compare, pytest.mark.slow]

V = 97
SIZES = [(1, 5), (3, 11), (2, 16)]
TOL = 1e-4              # relative norm error, float32 (measured 1e-7 .. 2e-7)
FAMILIES = ["gpt2", "bert", "llama"]
LAYERS = 2


def well_scaled(m, seed=0):
    """Weights giving unit-ish activations (the default init makes near-uniform softmaxes
    that would hide attention mistakes)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1:
                gain = name.endswith("weight") and ("ln" in name or "norm" in name.lower())
                p.copy_((1.0 if gain else 0.0) + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / min(p.shape) ** 0.5)
    return m.eval()


def hf_model(family):
    if family == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel
        return well_scaled(GPT2LMHeadModel(GPT2Config(
            vocab_size=V, n_positions=64, n_embd=32, n_layer=LAYERS, n_head=4)))
    if family == "bert":
        from transformers import BertConfig, BertModel
        return well_scaled(BertModel(BertConfig(
            hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
            intermediate_size=64, vocab_size=V, max_position_embeddings=64, pad_token_id=0)))
    from transformers import LlamaConfig, LlamaForCausalLM
    return well_scaled(LlamaForCausalLM(LlamaConfig(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        num_hidden_layers=LAYERS, vocab_size=V, max_position_embeddings=64, pad_token_id=0,
        bos_token_id=1, eos_token_id=2)))


class _Out(torch.nn.Module):
    """The model's logits (or BERT's last hidden state) as the one output."""

    def __init__(self, m, family):
        super().__init__()
        self.m, self.family = m, family

    def forward(self, ids, mask=None):
        if self.family == "bert":
            return self.m(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.m(input_ids=ids, use_cache=False).logits


def export(family, path):
    """Export ``family`` to ``path`` with dynamic (batch, seq); returns the input names."""
    m = hf_model(family)
    names = ["input_ids", "attention_mask"] if family == "bert" else ["input_ids"]
    args = (torch.randint(0, V, (2, 7)),)
    if family == "bert":
        args += (torch.ones(2, 7, dtype=torch.int64),)
    dyn = {n: {0: "batch", 1: "seq"} for n in names + ["out"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Out(m, family), args, str(path), input_names=names,
                          output_names=["out"], dynamic_axes=dyn, dynamo=True,
                          opset_version=18, verbose=False)
    return names


_FILES: dict = {}
_EXE: dict = {}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    def get(family):
        if family not in _FILES:
            path = tmp_path_factory.mktemp(family) / f"{family}.onnx"
            export(family, path)
            _FILES[family] = (str(path), graphc.from_onnx(str(path)))
        return _FILES[family]
    return get


def compiled(exported, family, backend):
    key = (family, backend)
    if key not in _EXE:
        _EXE[key] = graphc.compile(exported(family)[1], backend=backend)
    return _EXE[key]


def feeds_for(family, B, S, rng):
    """input_ids in the vocabulary; BERT's attention_mask right-padded (the first row
    full, the others 1..S-1 tokens)."""
    feeds = {"input_ids": rng.integers(0, V, (B, S)).astype(np.int64)}
    if family == "bert":
        lens = [S] + [int(n) for n in rng.integers(1, S, B - 1)]
        feeds["attention_mask"] = (np.arange(S)[None] < np.array(lens)[:, None]) \
            .astype(np.int64)
    return feeds


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_model_matches_ort_at_every_size(family, exported, rng):
    """One import, one compile per backend, three (batch, seq) against ONNX Runtime;
    cupy-emu at one size."""
    path, g = exported(family)
    assert [[str(d) for d in t.shape] for t in g.input_types] == \
        [["batch", "seq"]] * (2 if family == "bert" else 1)
    sess = session(path)
    for backend, sizes in (("reference", SIZES), ("numba", SIZES),
                           ("cupy-emu", SIZES[1:2])):
        exe = compiled(exported, family, backend)
        for B, S in sizes:
            feeds = feeds_for(family, B, S, rng)
            (want,) = sess.run(None, feeds)
            got = exe(*feeds.values())
            assert got.shape == want.shape and got.dtype == np.float32
            assert rel(got, want) < TOL, (family, backend, B, S)


def test_exported_bert_row_without_keys_is_zero_as_in_ort(exported, rng):
    """An all-zero attention_mask row: every query of it sees no key. The exporter's
    NaN guard (where(isnan(p), 0, p)) makes that row's attention 0; the fused attention
    keeps the guard's answer."""
    path, _ = exported("bert")
    feeds = feeds_for("bert", 3, 9, rng)
    feeds["attention_mask"][1] = 0
    (want,) = session(path).run(None, feeds)
    for backend in ("reference", "numba"):
        got = compiled(exported, "bert", backend)(*feeds.values())
        assert not np.isnan(got).any()
        assert rel(got, want) < TOL, backend


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_attention_is_one_fused_step_per_layer(family, exported):
    """After O2 (the default) each layer's attention is one AttentionStep: no softmax
    left outside it, and Llama's k and v read with their 2 KV heads (no head copies)."""
    exe = compiled(exported, family, "numba")
    steps = [s for s in exe.program.steps if isinstance(s, AttentionStep)]
    assert len(steps) == LAYERS, exe.program
    body = set()
    for node in exe.graph.nodes.values():
        if node.op == "fused":
            body |= {n.op for n in node.attrs["body"].nodes.values()}
    assert "softmax" not in body, body
    for st in steps:
        if family == "bert":
            assert st.mask is not None          # the padding mask
        if family == "llama":
            kv = Sym.of("batch") * Sym.of("seq") * 2 * 8     # 2 KV heads of 8
            for view in (st.k, st.v):
                shape = exe.graph.nodes[st.operands[view.operand]].type.shape
                assert prod(shape) == kv, shape


def conv_model(family):
    """ViT (a Conv2d patch embedding), Whisper (two Conv1d over the mel frames, an
    encoder-decoder with cross attention) or wav2vec2 (strided Conv1d over raw audio,
    GroupNorm as InstanceNormalization, a grouped positional Conv1d), tiny and wrapped to return the last hidden
    state, with example inputs, input names and dynamic axes."""
    if family == "vit":
        from transformers import ViTConfig, ViTModel
        m = well_scaled(ViTModel(ViTConfig(
            hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
            intermediate_size=64, image_size=32, patch_size=8, num_channels=3)))
        return _Vit(m), (torch.randn(2, 3, 32, 32),), ["pixel_values"], \
            {"pixel_values": {0: "batch"}, "out": {0: "batch"}}
    if family == "wav2vec2":
        from transformers import Wav2Vec2Config, Wav2Vec2Model
        m = well_scaled(Wav2Vec2Model(Wav2Vec2Config(
            hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
            intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=20)))
        return _Audio(m), (torch.randn(2, 400),), ["input_values"], \
            {"input_values": {0: "batch"}, "out": {0: "batch"}}
    from transformers import WhisperConfig, WhisperModel
    m = well_scaled(WhisperModel(WhisperConfig(
        d_model=32, encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
        max_source_positions=16, max_target_positions=32, vocab_size=V, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)))
    return _Whisper(m), (torch.randn(2, 8, 32), torch.randint(0, V, (2, 5))), \
        ["input_features", "decoder_input_ids"], \
        {"input_features": {0: "batch"}, "decoder_input_ids": {0: "batch", 1: "seq"},
         "out": {0: "batch", 1: "seq"}}


class _Vit(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, pixel_values):
        return self.m(pixel_values=pixel_values).last_hidden_state


class _Audio(_Vit):
    def forward(self, input_values):
        return self.m(input_values=input_values).last_hidden_state


class _Whisper(_Vit):
    def forward(self, input_features, decoder_input_ids):
        return self.m(input_features=input_features, decoder_input_ids=decoder_input_ids,
                      use_cache=False).last_hidden_state


@pytest.mark.parametrize("family,attentions",
                         [("vit", LAYERS), ("whisper", 3 * LAYERS), ("wav2vec2", LAYERS)])
def test_exported_conv_front_end_matches_ort(family, attentions, tmp_path, rng):
    """Models whose inputs go through ONNX Conv (ViT's patch embedding, Whisper's strided
    Conv1d pair, wav2vec2's feature encoder and grouped positional conv) import with a dynamic batch, match ONNX Runtime at two sizes on reference
    and numba, and keep every attention fused (Whisper: encoder, decoder and cross)."""
    mod, args, names, dyn = conv_model(family)
    path = str(tmp_path / f"{family}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mod, args, path, input_names=names, output_names=["out"],
                          dynamic_axes=dyn, dynamo=True, opset_version=18, verbose=False)
    g = graphc.from_onnx(path)
    sess = session(path)
    for backend in ("reference", "numba"):
        exe = graphc.compile(g, backend=backend)
        for B, S in ((1, 3), (3, 7)):
            if family == "vit":
                feeds = {names[0]: rng.standard_normal((B, 3, 32, 32)).astype(np.float32)}
            elif family == "wav2vec2":
                feeds = {names[0]: rng.standard_normal((B, 400)).astype(np.float32)}
            else:
                feeds = {names[0]: rng.standard_normal((B, 8, 32)).astype(np.float32),
                         names[1]: rng.integers(0, V, (B, S)).astype(np.int64)}
            (want,) = sess.run(None, feeds)
            got = exe(*feeds.values())
            assert got.shape == want.shape and rel(got, want) < TOL, (family, backend, B, S)
    steps = [s for s in exe.program.steps if isinstance(s, AttentionStep)]
    assert len(steps) == attentions, exe.program
