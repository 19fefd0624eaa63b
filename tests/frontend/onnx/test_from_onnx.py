"""graphc.from_onnx on hand-built models: symbolic dims (one compile, several sizes),
pinned dims, shape arithmetic folded at import, the one UnsupportedOpError, external
data, values needed at import, and errors that name the ONNX node. Checked against
ONNX Runtime."""
import subprocess
import sys

import numpy as np
import pytest

import graphc

onnx = pytest.importorskip("onnx", reason="needs the 'compare' extra (onnx)")
ort = pytest.importorskip("onnxruntime", reason="needs the 'compare' extra (onnxruntime)")
pytestmark = pytest.mark.compare

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from graphc.frontend.onnx import NeedsValueError, UnsupportedOpError  # noqa: E402

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def _model(nodes, inputs, outputs, inits=(), opset=18, name="m"):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _ort(model, *arrays):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), so,
                             providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: a for i, a in zip(s.get_inputs(), arrays)})


def attention_block(seed=0):
    """x [batch, seq, 16] -> heads via Shape/Gather/Concat/Reshape -> softmax(q k^T) v
    -> back to [batch, seq, 16] -> LayerNormalization: the shape arithmetic of an
    exported Transformer."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((16, 48)).astype(np.float32) / 4
    inits = [numpy_helper.from_array(W, "W"),
             numpy_helper.from_array(np.array([0], np.int64), "i0"),
             numpy_helper.from_array(np.array([1], np.int64), "i1"),
             numpy_helper.from_array(np.array([4, 4], np.int64), "heads"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(np.ones(16, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(16, np.float32), "beta")]
    mk = helper.make_node
    nodes = [
        mk("MatMul", ["x", "W"], ["qkv"], name="qkv_proj"),
        mk("Split", ["qkv"], ["q", "k", "v"], axis=2, num_outputs=3, name="split_qkv"),
        mk("Shape", ["x"], ["shp"], name="shape_x"),
        mk("Gather", ["shp", "i0"], ["b"], axis=0, name="batch_dim"),
        mk("Gather", ["shp", "i1"], ["s"], axis=0, name="seq_dim"),
        mk("Concat", ["b", "s", "heads"], ["hshape"], axis=0, name="head_shape"),
        mk("Concat", ["b", "s", "minus1"], ["oshape"], axis=0, name="out_shape"),
    ]
    for t in "qkv":
        nodes += [mk("Reshape", [t, "hshape"], [t + "4"], name=f"split_heads_{t}"),
                  mk("Transpose", [t + "4"], [t + "h"], perm=[0, 2, 1, 3],
                     name=f"heads_first_{t}")]
    nodes += [
        mk("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2], name="k_transpose"),
        mk("MatMul", ["qh", "kt"], ["scores"], name="scores"),
        mk("Softmax", ["scores"], ["probs"], axis=-1, name="softmax"),
        mk("MatMul", ["probs", "vh"], ["ctx"], name="context"),
        mk("Transpose", ["ctx"], ["ctxt"], perm=[0, 2, 1, 3], name="heads_back"),
        mk("Reshape", ["ctxt", "oshape"], ["merged"], name="merge_heads"),
        mk("LayerNormalization", ["merged", "gamma", "beta"], ["y"], axis=-1,
           epsilon=1e-5, name="ln"),
    ]
    x = helper.make_tensor_value_info("x", F, ["batch", "seq", 16])
    y = helper.make_tensor_value_info("y", F, ["batch", "seq", 16])
    return _model(nodes, [x], [y], inits)


def test_symbolic_dims_one_compile_every_size():
    m = attention_block()
    g = graphc.from_onnx(m)
    (t,) = g.input_types
    assert [str(d) for d in t.shape] == ["batch", "seq", "16"]
    ops = g.op_counts()
    # the shape arithmetic ran at import: no Shape / Gather / Concat of shapes remain
    assert "concat" not in ops and "take_along_axis" not in ops and "embedding" not in ops
    rng = np.random.default_rng(1)
    for backend in ("reference", "numba"):
        exe = graphc.compile(g, backend=backend)
        for b, s in ((1, 3), (2, 7), (3, 5)):
            x = rng.standard_normal((b, s, 16)).astype(np.float32)
            (want,) = _ort(m, x)
            np.testing.assert_allclose(exe(x), want, rtol=1e-4, atol=1e-5)


def test_dims_pinned():
    m = attention_block()
    g = graphc.from_onnx(m, dims={"seq": 5})
    assert [str(d) for d in g.input_types[0].shape] == ["batch", "5", "16"]
    exe = graphc.compile(g)
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    np.testing.assert_allclose(exe(x), _ort(m, x)[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(graphc.InputError):
        exe(np.zeros((2, 6, 16), np.float32))
    with pytest.raises(graphc.GraphcError, match="'sequence' is not a dynamic dim"):
        graphc.from_onnx(m, dims={"sequence": 5})


def test_unnamed_dynamic_dim_becomes_a_symbol():
    x = helper.make_tensor_value_info("x", F, [None, 3])
    x.type.tensor_type.shape.dim[0].Clear()
    y = helper.make_tensor_value_info("y", F, [None, 3])
    g = graphc.from_onnx(_model([helper.make_node("Relu", ["x"], ["y"])], [x], [y]))
    assert str(g.input_types[0].shape[0]) == "x_0"


def test_unsupported_ops_reported_once_before_building():
    mk = helper.make_node
    nodes = [mk("Relu", ["x"], ["a"], name="ok"),
             mk("LSTM", ["a", "w", "r"], ["b"], name="lstm_1"),
             mk("LSTM", ["b", "w", "r"], ["c"], name="lstm_2"),
             mk("FusedMatMul", ["c", "c"], ["d"], domain="com.microsoft", name="fmm"),
             mk("NonZero", ["d"], ["y"], name="nz")]
    x = helper.make_tensor_value_info("x", F, [2, 3])
    y = helper.make_tensor_value_info("y", I64, None)
    m = _model(nodes, [x], [y])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOpError) as e:
        graphc.from_onnx(m)
    text = str(e.value)
    for part in ("LSTM (domain ai.onnx, opset 18): 2 nodes: 'lstm_1', 'lstm_2'",
                 "FusedMatMul (domain com.microsoft, opset 1): 1 node: 'fmm'",
                 "NonZero (domain ai.onnx, opset 18): 1 node: 'nz'", "3 op types", "4 nodes"):
        assert part in text, text
    assert isinstance(e.value, graphc.GraphcError)
    assert sorted(u[1] for u in e.value.unsupported) == ["FusedMatMul", "LSTM", "NonZero"]


def test_external_data(tmp_path):
    m = attention_block(seed=3)
    path = tmp_path / "model.onnx"
    saved = onnx.ModelProto()
    saved.CopyFrom(m)          # save_model moves the weights of the model it saves
    onnx.save_model(saved, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").stat().st_size > 16 * 48 * 4
    g = graphc.from_onnx(str(path))
    x = np.random.default_rng(2).standard_normal((2, 4, 16)).astype(np.float32)
    np.testing.assert_allclose(graphc.compile(g)(x), _ort(m, x)[0], rtol=1e-4, atol=1e-5)


def test_errors_name_the_onnx_node():
    mk = helper.make_node
    w = numpy_helper.from_array(np.ones((5, 2), np.float32), "w")
    nodes = [mk("Relu", ["x"], ["a"], name="first_relu"),
             mk("MatMul", ["a", "w"], ["y"], name="bad_matmul")]
    x = helper.make_tensor_value_info("x", F, ["n", 4])
    y = helper.make_tensor_value_info("y", F, None)
    with pytest.raises(graphc.ShapeError) as e:
        graphc.from_onnx(_model(nodes, [x], [y], [w]))
    assert "ONNX node 'bad_matmul' (op type MatMul" in str(e.value), str(e.value)


def test_run_time_error_names_the_onnx_node():
    mk = helper.make_node
    nodes = [mk("GatherElements", ["x", "i"], ["y"], axis=0, name="pick_rows")]
    x = helper.make_tensor_value_info("x", F, [3, 2])
    i = helper.make_tensor_value_info("i", I64, [2, 2])
    y = helper.make_tensor_value_info("y", F, [2, 2])
    exe = graphc.compile(graphc.from_onnx(_model(nodes, [x, i], [y])))
    with pytest.raises(graphc.InputError) as e:
        exe(np.zeros((3, 2), np.float32), np.array([[0, 1], [7, 0]], np.int64))
    assert "pick_rows" in str(e.value), str(e.value)


def test_value_needed_at_import():
    mk = helper.make_node
    nodes = [mk("Reshape", ["x", "shape"], ["y"], name="reshape_by_input")]
    x = helper.make_tensor_value_info("x", F, [2, 6])
    s = helper.make_tensor_value_info("shape", I64, [2])
    y = helper.make_tensor_value_info("y", F, None)
    m = _model(nodes, [x, s], [y])
    with pytest.raises(NeedsValueError) as e:
        graphc.from_onnx(m)
    assert e.value.input_name == "shape" and "reshape_by_input" in str(e.value)
    g = graphc.from_onnx(m, values={"shape": np.array([3, -1])})
    assert g.input_names == ["x"] and str(g.output_types[0]) == "f32[3,4]"
    import graphc.onnx_backend as gb
    xv = np.arange(12, dtype=np.float32).reshape(2, 6)
    (out,) = gb.prepare(m).run([xv, np.array([4, 3])])
    np.testing.assert_array_equal(out, xv.reshape(4, 3))


def test_backend_interface():
    import graphc.onnx_backend as gb
    assert gb.supports_device("CPU")
    node = helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    (y,) = gb.run_node(node, [x])
    (ref,) = _ort(_model([node], [helper.make_tensor_value_info("x", F, [3, 4])],
                         [helper.make_tensor_value_info("y", F, [3, 4])], opset=20), x)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    m = attention_block()
    assert gb.GraphcBackend.is_compatible(m)
    rep = gb.prepare(m, backend="numba")
    xv = np.random.default_rng(5).standard_normal((2, 3, 16)).astype(np.float32)
    np.testing.assert_allclose(rep.run([xv])[0], _ort(m, xv)[0], rtol=1e-4, atol=1e-5)


def test_import_graphc_needs_no_onnx():
    code = ("import sys, graphc; assert 'onnx' not in sys.modules, 'onnx imported'; "
            "print(graphc.from_onnx.__name__, graphc.UnsupportedOpError.__mro__[1].__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["from_onnx", "GraphcError"]


def test_mha_style_projection_and_selects(rng):
    """torch's MultiheadAttention export: x [B, S, E] transposed to [S, B, E] before the
    in-projection MatMul, view [S, B, 3, E] -> Unsqueeze -> Transpose -> Squeeze, then
    Gather 0 / 1 / 2 selects q, k, v. The MatMul reads x as it lies (one GEMM, the
    transpose after it), the selects are slices (no index map), and the result is ORT's."""
    E = 8
    W = rng.standard_normal((E, 3 * E)).astype(np.float32)
    b = rng.standard_normal(3 * E).astype(np.float32)
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.array([0, 0, 3, E], np.int64), "view"),
             numpy_helper.from_array(np.array([0], np.int64), "ax0"),
             numpy_helper.from_array(np.array([3], np.int64), "ax3")]
    inits += [numpy_helper.from_array(np.array(k, np.int64), f"i{k}") for k in range(3)]
    mk = helper.make_node
    nodes = [mk("Transpose", ["x"], ["xt"], perm=[1, 0, 2], name="seq_first"),
             mk("MatMul", ["xt", "W"], ["p"], name="in_proj"),
             mk("Add", ["p", "b"], ["pb"], name="in_bias"),
             mk("Reshape", ["pb", "view"], ["v4"], name="view"),
             mk("Unsqueeze", ["v4", "ax0"], ["u"], name="unsqueeze"),
             mk("Transpose", ["u"], ["ut"], perm=[3, 1, 2, 0, 4], name="qkv_first"),
             mk("Squeeze", ["ut", "ax3"], ["qkv"], name="squeeze")]
    nodes += [mk("Gather", ["qkv", f"i{k}"], [n], axis=0, name=f"select_{n}")
              for k, n in enumerate("qkv")]
    nodes += [mk("Mul", ["k", "v"], ["kv"], name="kv"), mk("Add", ["q", "kv"], ["y"], name="y")]
    x = helper.make_tensor_value_info("x", F, ["batch", "seq", E])
    y = helper.make_tensor_value_info("y", F, ["seq", "batch", E])
    m = _model(nodes, [x], [y], inits)
    g = graphc.from_onnx(m)
    ops = g.op_counts()
    assert "take_along_axis" not in ops and "embedding" not in ops
    (mm,) = [n for n in g if n.op == "matmul"]
    assert g.nodes[mm.inputs[0]].op == "input"
    for backend in ("reference", "numba"):
        exe = graphc.compile(g, backend=backend)
        for B, S in ((1, 5), (3, 4)):
            xs = rng.standard_normal((B, S, E)).astype(np.float32)
            (want,) = _ort(m, xs)
            got = exe(xs)
            assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5, (backend, B, S)


def test_min_of_a_dynamic_dim_asks_to_pin_it():
    """Reshape to [Min(seq, 8)] (a shape with no symbolic form): the error says to pin
    the dim, and with it pinned the model imports and runs."""
    import onnx
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Shape", ["x"], ["shp"], start=1, end=2),
             helper.make_node("Min", ["shp", "eight"], ["n"]),
             helper.make_node("Slice", ["x", "zero", "n", "one"], ["y"])]
    g = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("eight", TensorProto.INT64, [1], [8]),
         helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
         helper.make_tensor("one", TensorProto.INT64, [1], [1])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(graphc.GraphcError, match=r"pin that dim: from_onnx\(\.\.\., dims="):
        graphc.from_onnx(model)
    x = np.arange(24, dtype=np.float32).reshape(2, 12)
    out = graphc.compile(graphc.from_onnx(model, dims={"seq": 12}))(x)
    np.testing.assert_array_equal(out, x[:, :8])


def _conv_model(rng, x_dims, wshape, attrs, bias=True):
    w = rng.standard_normal(wshape).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(wshape[0]).astype(np.float32), "B"))
    node = helper.make_node("Conv", ["x", "W"] + (["B"] if bias else []), ["y"], name="conv0",
                            **attrs)
    return _model([node], [helper.make_tensor_value_info("x", F, list(x_dims))],
                  [helper.make_tensor_value_info("y", F, None)], inits)


@pytest.mark.parametrize("xshape,wshape,attrs,bias", [
    ((2, 3, 11, 9), (4, 3, 3, 2), dict(strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2]), True),
    ((1, 3, 8, 12), (5, 3, 4, 4), dict(strides=[4, 4]), True),          # a patch embedding
    ((2, 4, 13), (6, 4, 3), dict(auto_pad="SAME_UPPER", strides=[2]), False),
    ((2, 4, 13), (6, 4, 4), dict(auto_pad="SAME_LOWER"), True),
    ((2, 4, 13), (6, 4, 3), dict(auto_pad="VALID", dilations=[3]), True),
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), dict(pads=[1, 1, 0, 0, 1, 1]), True),
    ((2, 6, 10), (9, 2, 3), dict(group=3, pads=[1, 1], strides=[2]), True),      # grouped
    ((2, 5, 7, 9), (5, 1, 3, 3), dict(group=5, pads=[1, 1, 1, 1]), True),       # depthwise
    ((2, 4, 11), (8, 1, 5), dict(group=4, dilations=[2]), False),       # multiplier 2
    ((1, 4, 8, 8), (4, 2, 2, 2), dict(group=2, strides=[2, 2]), True),  # grouped patches
])
def test_conv_against_onnxruntime(xshape, wshape, attrs, bias, rng):
    """Conv as one GEMM (the torch importer's): strides, asymmetric pads, dilations,
    auto_pad SAME_UPPER / SAME_LOWER / VALID, a patch embedding, 1-D to 3-D, groups
    (depthwise, with a channel multiplier), on the reference and numba against ONNX
    Runtime."""
    m = _conv_model(rng, xshape, wshape, attrs, bias)
    x = rng.standard_normal(xshape).astype(np.float32)
    want = _ort(m, x)[0]
    g = graphc.from_onnx(m)
    assert not any(n.op == "conv" for n in g.nodes.values())
    for backend in ("reference", "numba"):
        got = graphc.compile(g, backend=backend)(x)
        assert got.shape == want.shape
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5, backend


def test_conv_over_a_dynamic_length(rng):
    """Stride 1 over a dynamic length: one compile for every length; a stride over it has
    no symbolic output size: an error naming the node that says to pin the dim, and
    pinned it imports."""
    m = _conv_model(rng, ("batch", 4, "L"), (6, 4, 3), dict(pads=[1, 1]))
    exe = graphc.compile(graphc.from_onnx(m), backend="numba")
    for B, L in ((1, 5), (2, 17)):
        x = rng.standard_normal((B, 4, L)).astype(np.float32)
        want = _ort(m, x)[0]
        assert np.linalg.norm(exe(x) - want) / np.linalg.norm(want) < 1e-5
    strided = _conv_model(rng, ("batch", 4, "L"), (6, 4, 3), dict(strides=[2]))
    with pytest.raises(graphc.GraphcError, match="conv0.*stride 2 over the dynamic dim L.*pin"):
        graphc.from_onnx(strided)
    x = rng.standard_normal((2, 4, 16)).astype(np.float32)
    got = graphc.compile(graphc.from_onnx(strided, dims={"L": 16}), backend="reference")(x)
    want = _ort(strided, x)[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    bad = _conv_model(rng, (1, 4, 9), (4, 2, 3), dict(group=3))
    with pytest.raises(graphc.GraphcError, match=r"conv0.*group=3 for input \(1, 4, 9\)"):
        graphc.from_onnx(bad)


def test_attention_op_with_a_mask_is_one_fused_step(rng):
    """ONNX's own Attention (opset 23: what the dynamo exporter writes for SDPA there)
    with a bool padding mask, one query row of which sees no key: the import's NaN guard
    is the form the attention rule folds, so after O2 it is one AttentionStep, and the
    dead row is 0 as in ONNX Runtime."""
    from graphc.lower.program import AttentionStep
    B, H, S, D = 2, 4, 6, 8
    mk = helper.make_node
    nodes = [mk("Attention", ["q", "k", "v", "mask"], ["y"], name="sdpa")]
    ins = [helper.make_tensor_value_info("q", F, ["batch", H, "seq", D]),
           helper.make_tensor_value_info("k", F, ["batch", H, "seq", D]),
           helper.make_tensor_value_info("v", F, ["batch", H, "seq", D]),
           helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 1, "seq", "seq"])]
    out = [helper.make_tensor_value_info("y", F, None)]
    m = _model(nodes, ins, out, opset=23)
    m.ir_version = 10
    q, k, v = (rng.standard_normal((B, H, S, D)).astype(np.float32) for _ in range(3))
    mask = rng.random((B, 1, S, S)) < 0.7
    mask[..., 0] = True
    mask[1, 0, 2] = False                       # batch 1, query 2: no key
    (want,) = _ort(m, q, k, v, mask)
    assert np.all(want[1, :, 2] == 0)
    g = graphc.from_onnx(m)
    for backend in ("reference", "numba"):
        exe = graphc.compile(g, backend=backend)
        got = exe(q, k, v, mask)
        assert np.all(got[1, :, 2] == 0) and not np.isnan(got).any(), backend
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5, backend
    steps = [s for s in exe.program.steps if isinstance(s, AttentionStep)]
    assert len(steps) == 1, exe.program
