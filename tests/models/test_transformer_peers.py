"""The textbook encoder layer against PyTorch's nn.TransformerEncoderLayer and the same
layer exported to ONNX and run by ONNX Runtime (the `compare` extra; skipped without it)."""
import numpy as np
import pytest

import graphc
from graphc.models import transformer

torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
pytestmark = pytest.mark.compare


def torch_layer(model, dtype="float64"):
    return transformer.torch_encoder_layer(model.config, model.params, 0, dtype)


def model(causal):
    cfg = transformer.TransformerConfig(vocab_size=50, d_model=32, n_heads=4, d_ff=64,
                                        n_layers=1, causal=causal)
    return transformer.random(cfg, seed=int(np.random.default_rng().integers(1 << 30)))


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("causal", [False, True])
def test_encoder_layer_matches_pytorch(causal):
    m = model(causal)
    S = 11
    x = np.random.default_rng().standard_normal((S, m.config.d_model))
    tl = torch_layer(m, "float64")
    mask = torch.nn.Transformer.generate_square_subsequent_mask(S, dtype=torch.float64) \
        if causal else None
    with torch.no_grad():
        ref = tl(torch.from_numpy(x)[None], src_mask=mask, is_causal=causal)[0].numpy()
    g = m.trace_layer(0)
    out32 = graphc.compile(g)(x.astype(np.float32))          # O2 pipeline
    out64 = graphc.compile(g, backend="reference", float64=True)(x.astype(np.float32))
    assert rel(out32, ref) < 1e-5
    assert rel(out64, ref) < 1e-6   # float32 input rounding bounds this one


@pytest.mark.slow       # ONNX export and onnxruntime (~8 CPU s)
def test_encoder_layer_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime", reason="needs the 'compare' extra")
    pytest.importorskip("onnxscript", reason="needs the 'compare' extra")
    m = model(False)
    tl = torch_layer(m, "float32")
    S = 9
    x = np.random.default_rng().standard_normal((1, S, m.config.d_model)).astype(np.float32)
    prog = torch.onnx.export(tl, (torch.from_numpy(x),), dynamo=True,
                             dynamic_shapes=({1: torch.export.Dim("S")},), verbose=False)
    sess = ort.InferenceSession(prog.model_proto.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ref = sess.run(None, {name: x})[0][0]
    out = graphc.compile(m.trace_layer(0))(x[0])
    assert rel(out, ref.astype(np.float64)) < 1e-5
    # a second length through the same exported (dynamic) model and compiled graph
    x2 = np.random.default_rng().standard_normal((1, 5, m.config.d_model)).astype(np.float32)
    ref2 = sess.run(None, {name: x2})[0][0]
    assert rel(graphc.compile(m.trace_layer(0))(x2[0]), ref2.astype(np.float64)) < 1e-5
