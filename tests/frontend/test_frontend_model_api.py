"""The textbook model's tracing API gives well-formed graphs (numerics live in tests/models)."""
import os

import graphc
from graphc.models import transformer


def test_transformer_trace_verifies():
    model = transformer.random(transformer.TransformerConfig(n_layers=1), seed=0)
    g = model.trace()
    graphc.verify(g)
    assert g.input_names == ["ids"]
    assert [str(t) for t in g.input_types] == ["i64[S]"]
    assert [str(t) for t in g.output_types] == ["f32[S,1000]"]
    counts = g.op_counts()
    assert counts["embedding"] == 1
    assert counts["layernorm"] == 2
    assert counts["softmax"] == 2      # attention probabilities and the output
    # Named weights show up in the printed IR; every node points into the model file.
    text = str(g)
    assert "constant(name='layers.0.wq')" in text
    files = {os.path.basename(n.loc.filename) for n in g.nodes.values()
             if n.op not in ("input", "constant")}
    assert files == {"transformer.py"}


def test_transformer_layer_and_static_length_trace_verify():
    model = transformer.random(transformer.TransformerConfig(n_layers=2, causal=True), seed=1)
    layer = model.trace_layer(1)
    graphc.verify(layer)
    assert [str(t) for t in layer.output_types] == ["f32[S,64]"]
    assert "causal_mask" in layer.op_counts()
    fixed = model.trace(seq_len=5)
    graphc.verify(fixed)
    assert [str(t) for t in fixed.output_types] == ["f32[5,1000]"]
