"""graphc.* functions under trace (softmax, layernorm, relu, scale, matmul, split, concat,
topk), NumPy arrays as constants, keyword arguments and multiple outputs."""
import numpy as np
import pytest

import graphc
from frontend_check import assert_close, compile_traced, randn


def np_softmax(x, axis):
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


def np_layernorm(x, w, b, eps):
    x64 = x.astype(np.float64)
    mu = x64.mean(-1, keepdims=True)
    var = ((x64 - mu) ** 2).mean(-1, keepdims=True)
    return ((x64 - mu) / np.sqrt(var + eps) * w + b).astype(x.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax(rng, dtype, axis):
    x = randn(rng, (5, 7), dtype)
    g = graphc.trace(lambda x: graphc.softmax(x, axis=axis),
                     graphc.spec(("S", 7), np.dtype(dtype).name))
    assert_close(compile_traced(g)(x), np_softmax(x, axis))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_with_weight_and_bias_constants(rng, dtype):
    w = np.asarray(1 + 0.1 * rng.standard_normal(8), dtype)
    b = np.asarray(0.1 * rng.standard_normal(8), dtype)
    g = graphc.trace(lambda x: graphc.layernorm(x, w, b, eps=1e-5),
                     graphc.spec(("S", 8), np.dtype(dtype).name))
    exe = compile_traced(g)
    for S in (1, 6):
        x = randn(rng, (S, 8), dtype)
        assert_close(exe(x), np_layernorm(x, w, b, 1e-5))


def test_relu_scale_matmul_functions(rng):
    w = randn(rng, (4, 3))

    def fn(x):
        return graphc.relu(x), graphc.scale(x, 0.25), graphc.matmul(x, w), \
            graphc.relu(graphc.scale(graphc.matmul(x, w), -2.0))

    x = randn(rng, (6, 4))
    got = compile_traced(graphc.trace(fn, graphc.spec(("S", 4))))(x)
    want = (np.maximum(x, 0), x * np.float32(0.25), x @ w, np.maximum(-2 * (x @ w), 0))
    for a, b in zip(got, want):
        assert_close(a, b)


def test_split_equal_parts_and_sizes(rng):
    def fn(x):
        a, b, c = graphc.split(x, 3, axis=1)
        d, e = graphc.split(x, [2, 4], axis=-1)
        return a, b, c, d, e

    g = graphc.trace(fn, graphc.spec(("S", 6)))
    assert [str(t) for t in g.output_types] == \
        ["f32[S,2]", "f32[S,2]", "f32[S,2]", "f32[S,2]", "f32[S,4]"]
    x = randn(rng, (5, 6))
    want = tuple(np.split(x, 3, axis=1)) + tuple(np.split(x, [2], axis=1))
    for a, b in zip(compile_traced(g)(x), want):
        assert_close(a, b)


def test_split_along_symbolic_axis_with_symbolic_sizes(rng):
    def fn(x):
        S = x.shape[0]
        return tuple(graphc.split(x, [1, S - 1], axis=0))

    g = graphc.trace(fn, graphc.spec(("S", 3)))
    assert [str(t) for t in g.output_types] == ["f32[1,3]", "f32[S-1,3]"]
    x = randn(rng, (4, 3))
    head, tail = compile_traced(g)(x)
    assert_close(head, x[:1])
    assert_close(tail, x[1:])


def test_concat_static_symbolic_and_forms(rng):
    c = randn(rng, (2, 3))

    def fn(x, y):
        return graphc.concat(x, y, axis=0), graphc.concat([x, c], 0), \
            graphc.concat((x, x), axis=1)

    g = graphc.trace(fn, graphc.spec(("S", 3)), graphc.spec(("T", 3)))
    assert [str(t) for t in g.output_types] == ["f32[S+T,3]", "f32[S+2,3]", "f32[S,6]"]
    x, y = randn(rng, (4, 3)), randn(rng, (5, 3))
    got = compile_traced(g)(x, y)
    for a, b in zip(got, (np.concatenate([x, y]), np.concatenate([x, c]),
                          np.concatenate([x, x], axis=1))):
        assert_close(a, b)


@pytest.mark.parametrize("axis", [-1, 0])
def test_topk_values_and_indices(rng, axis):
    x = randn(rng, (5, 6))
    g = graphc.trace(lambda x: graphc.topk(x, 3, axis=axis), graphc.spec((5, 6)))
    vals, idx = compile_traced(g)(x)
    want_idx = np.take(np.argsort(-x, axis=axis), np.arange(3), axis=axis)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, want_idx)
    assert_close(vals, np.take_along_axis(x, want_idx, axis=axis))


# -- constants -------------------------------------------------------------------------

def test_numpy_array_becomes_one_constant_node(rng):
    w = randn(rng, (4, 4))
    b = randn(rng, (4,))

    def fn(x):
        return (x @ w + b) @ w + b + graphc.constant(w)[0]

    g = graphc.trace(fn, graphc.spec(("S", 4)))
    consts = [n for n in g.nodes.values() if n.op == "constant"]
    assert len(consts) == 2                       # w and b, each once
    values = [g.constants[n.id] for n in consts]
    assert any(v is w for v in values) and any(v is b for v in values)
    assert len(g.users(next(n.id for n in consts if g.constants[n.id] is w))) == 3
    x = randn(rng, (3, 4))
    assert_close(compile_traced(g)(x), (x @ w + b) @ w + b + w[0])


def test_equal_but_distinct_arrays_are_distinct_constants(rng):
    w = randn(rng, (3, 3))
    w2 = w.copy()
    g = graphc.trace(lambda x: x @ w + x @ w2, graphc.spec(("S", 3)))
    assert g.op_counts()["constant"] == 2


def test_named_constant_shows_in_ir(rng):
    w = randn(rng, (3, 3))
    g = graphc.trace(lambda x: x @ graphc.constant(w, name="proj.weight"),
                     graphc.spec(("S", 3)))
    assert "constant(name='proj.weight') : f32[3,3]" in str(g)


# -- arguments and outputs -------------------------------------------------------------

def test_keyword_values_pass_through(rng):
    seen = {}

    def fn(x, *, factor, activation, sizes):
        seen.update(factor=factor, activation=activation, sizes=sizes)
        y = graphc.scale(x, factor)
        return graphc.relu(y) if activation == "relu" else y

    g = graphc.trace(fn, graphc.spec(("S", 4)), factor=3.0, activation="relu", sizes=[1, 2])
    assert seen == {"factor": 3.0, "activation": "relu", "sizes": [1, 2]}
    assert len(g.inputs) == 1
    x = randn(rng, (2, 4))
    assert_close(compile_traced(g)(x), np.maximum(3 * x, 0))


def test_spec_passed_as_keyword_becomes_input(rng):
    def fn(x, bias=None, *, k):
        return x * k + bias

    g = graphc.trace(fn, graphc.spec(("S", 4)), bias=graphc.spec((4,)), k=2.0)
    assert g.input_names == ["x", "bias"]
    assert [str(t) for t in g.input_types] == ["f32[S,4]", "f32[4]"]
    x, b = randn(rng, (3, 4)), randn(rng, (4,))
    assert_close(compile_traced(g)(x, b), x * 2 + b)


def test_spec_names_override_parameter_names():
    g = graphc.trace(lambda a, b: a + b, graphc.spec((2,), name="left"), graphc.spec((2,)))
    assert g.input_names == ["left", "b"]


def test_multiple_outputs_return_a_tuple(rng):
    g = graphc.trace(lambda x: (x + 1.0, x * x, -x), graphc.spec(("S", 2)))
    x = randn(rng, (3, 2))
    out = compile_traced(g)(x)
    assert isinstance(out, tuple) and len(out) == 3
    for a, b in zip(out, (x + 1, x * x, -x)):
        assert_close(a, b)


def test_list_and_one_element_tuple_outputs(rng):
    x = randn(rng, (3, 2))
    out = compile_traced(graphc.trace(lambda x: [x * 2.0, x], graphc.spec(("S", 2))))(x)
    assert isinstance(out, tuple) and len(out) == 2
    assert_close(out[0], 2 * x)
    assert_close(out[1], x)
    one = compile_traced(graphc.trace(lambda x: (x * 2.0,), graphc.spec(("S", 2))))(x)
    assert isinstance(one, tuple) and len(one) == 1
    assert_close(one[0], 2 * x)
    single = compile_traced(graphc.trace(lambda x: x * 2.0, graphc.spec(("S", 2))))(x)
    assert isinstance(single, np.ndarray)
    assert_close(single, 2 * x)


def test_returned_ndarray_becomes_constant_output(rng):
    c = randn(rng, (2, 2))
    g = graphc.trace(lambda x: (x, c), graphc.spec((2, 2)))
    x = randn(rng, (2, 2))
    out = compile_traced(g)(x)
    assert_close(out[0], x)
    assert_close(out[1], c)


@pytest.mark.parametrize("dtype,other", [("float32", 0.0), ("float64", 2.5), ("float32", 1),
                                         ("int64", 0)])
def test_where_with_a_python_number_branch(rng, dtype, other):
    """The number takes the dtype of the value operand, not of the bool condition."""
    x = np.asarray(rng.standard_normal((3, 4)) * 10, dtype)
    g = graphc.trace(lambda x: graphc.where(x > 0, x, other), graphc.spec(("S", 4), dtype))
    got = compile_traced(g)(x)
    want = np.where(x > 0, x, np.asarray(other, dtype))
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_split_accepts_numpy_int_count(rng):
    x = randn(rng, (3, 4))
    g = graphc.trace(lambda x: tuple(graphc.split(x, np.int64(2), axis=1)),
                     graphc.spec(("S", 4)))
    a, b = compile_traced(g)(x)
    assert_close(a, x[:, :2])
    assert_close(b, x[:, 2:])


# -- torch's chunk / split / unbind on traced tensors ------------------------------------------
def _np_chunks(x, n, axis):
    size = -(-x.shape[axis] // n)
    return [np.take(x, range(s, min(s + size, x.shape[axis])), axis=axis)
            for s in range(0, x.shape[axis], size)]


@pytest.mark.parametrize("n,axis", [(3, 1), (2, 0), (4, -1), (1, 1)])
def test_chunk_matches_torch_sizes(n, axis):
    x = np.random.default_rng(n).standard_normal((6, 10)).astype(np.float32)
    g = graphc.trace(lambda t: list(t.chunk(n, dim=axis)), graphc.spec((6, 10)))
    got = graphc.compile(g, backend="reference")(x)
    want = _np_chunks(x, n, axis)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_split_by_size_and_by_sizes_and_unbind():
    x = np.random.default_rng(3).standard_normal((3, 10)).astype(np.float32)
    g = graphc.trace(lambda t: [*t.split(4, 1), *t.split([7, 3], dim=1), *t.unbind(0)],
                     graphc.spec((3, 10)))
    got = graphc.compile(g, backend="reference")(x)
    want = [x[:, :4], x[:, 4:8], x[:, 8:], x[:, :7], x[:, 7:], x[0], x[1], x[2]]
    assert [a.shape for a in got] == [b.shape for b in want]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_chunk_of_a_symbolic_dim_must_divide():
    with pytest.raises(graphc.TraceError, match=r"chunk\(3\): dim 0 of f32\[S,4\] is S"):
        graphc.trace(lambda t: t.chunk(3, 0)[0], graphc.spec(("S", 4)))
    with pytest.raises(graphc.TraceError, match="unbind.*symbolic"):
        graphc.trace(lambda t: t.unbind(0)[0], graphc.spec(("S", 4)))
    g = graphc.trace(lambda t: t.reshape(-1).chunk(2)[1], graphc.spec(("S", 4)))
    x = np.random.default_rng(4).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(graphc.compile(g, backend="reference")(x), x.ravel()[10:])
