"""A model exported by torch.onnx (the dynamo exporter, dynamic batch and sequence):
a tiny GPT-2 from `transformers`, imported once with symbolic (batch, seq), compiled once
per backend and run at two sizes against ONNX Runtime on the same file. Slow: the
export alone takes ~25 s."""
import warnings

import numpy as np
import pytest

import graphc

onnx = pytest.importorskip("onnx", reason="needs the 'compare' extra (onnx)")
ort = pytest.importorskip("onnxruntime", reason="needs the 'compare' extra (onnxruntime)")
torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
transformers = pytest.importorskip("transformers", reason="needs the 'compare' extra")
pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
pytestmark = [pytest.mark.compare, pytest.mark.slow]

V = 97


@pytest.fixture(scope="module")
def gpt2_onnx(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    model = GPT2LMHeadModel(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids):
            return self.m(input_ids=ids, use_cache=False).logits

    path = tmp_path_factory.mktemp("gpt2") / "gpt2.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(model), (torch.randint(0, V, (2, 7)),), str(path),
                          input_names=["ids"], output_names=["logits"],
                          dynamic_axes={"ids": {0: "batch", 1: "seq"},
                                        "logits": {0: "batch", 1: "seq"}},
                          dynamo=True, opset_version=18, verbose=False)
    return str(path)


def test_exported_gpt2_symbolic_sizes(gpt2_onnx):
    g = graphc.from_onnx(gpt2_onnx)
    assert [str(d) for d in g.input_types[0].shape] == ["batch", "seq"]
    sess = ort.InferenceSession(gpt2_onnx, providers=["CPUExecutionProvider"])
    for backend in ("reference", "numba", "cupy-emu"):
        exe = graphc.compile(g, backend=backend)
        for b, s in ((1, 5), (3, 11)):
            ids = np.random.default_rng(b * s).integers(0, V, (b, s)).astype(np.int64)
            (want,) = sess.run(None, {"ids": ids})
            np.testing.assert_allclose(exe(ids), want, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{backend} at batch {b}, seq {s}")
