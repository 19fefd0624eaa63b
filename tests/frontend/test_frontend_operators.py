"""Tensor operators under graphc.trace: @, + - * / with NumPy broadcasting, unary -,
.T, .transpose, .reshape, .shape, .dtype; each checked against NumPy on random inputs."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphc
from frontend_check import assert_close, compile_traced, randn
from graphc.ir.dims import Sym


def away_from_zero(rng, shape, dtype=np.float32):
    """Divisors: magnitudes in [0.5, 2], random signs."""
    return np.asarray(rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape), dtype=dtype)


def run(fn, specs, *arrays, **kwargs):
    g = graphc.trace(fn, *specs, **kwargs)
    graphc.verify(g)
    return compile_traced(g)(*arrays)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_operator(rng, dtype):
    dt = np.dtype(dtype).name
    a, b = randn(rng, (5, 7), dtype), randn(rng, (7, 3), dtype)
    assert_close(run(lambda x, y: x @ y, [graphc.spec(("S", 7), dt),
                                          graphc.spec((7, 3), dt)], a, b), a @ b)


def test_matmul_with_ndarray_on_either_side(rng):
    w = randn(rng, (6, 4))
    m = randn(rng, (3, 5))
    x = randn(rng, (5, 6))
    out = run(lambda x: (x @ w, m @ x), [graphc.spec((5, 6))], x)
    assert_close(out[0], x @ w)
    assert_close(out[1], m @ x)


def test_matmul_batched_and_vector(rng):
    a, b = randn(rng, (2, 3, 4)), randn(rng, (4, 5))
    v = randn(rng, (4,))
    out = run(lambda a, b: (a @ b, a @ v, graphc.matmul(a, b)),
              [graphc.spec((2, "S", 4)), graphc.spec((4, 5))], a, b)
    assert_close(out[0], a @ b)
    assert_close(out[1], a @ v)
    assert_close(out[2], a @ b)


@pytest.mark.parametrize("xs,ys", [((4, 5), (5,)), ((4, 1), (1, 5)), ((3, 1, 5), (4, 1)),
                                    ((1,), (2, 3)), ((2, 3), ())])
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_operators_broadcast_static(rng, xs, ys, op):
    a = randn(rng, xs)
    b = away_from_zero(rng, ys)
    f = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y,
         "mul": lambda x, y: x * y, "div": lambda x, y: x / y}[op]
    got = run(f, [graphc.spec(xs), graphc.spec(ys)], a, b)
    assert_close(got, f(a, b))


def test_binary_operators_broadcast_symbolic(rng):
    """[S,4] with [4], [S,1] and [1,4] operands; the graph runs for two sizes of S."""
    bias = randn(rng, (4,))
    row = away_from_zero(rng, (1, 4))

    def fn(x, col):
        return x + bias, x - col, col * row, x / row, (x + col) * (x - bias)

    g = graphc.trace(fn, graphc.spec(("S", 4)), graphc.spec(("S", 1)))
    assert [str(t) for t in g.output_types] == ["f32[S,4]"] * 5
    exe = compile_traced(g)
    for S in (3, 7):
        x, col = randn(rng, (S, 4)), randn(rng, (S, 1))
        for got, want in zip(exe(x, col), fn(x, col)):
            assert_close(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scalars_on_both_sides(rng, dtype):
    dt = np.dtype(dtype).name
    x = away_from_zero(rng, (3, 4), dtype)

    def fn(x):
        return 2.0 - x, x - 0.5, 3 * x, x * 1.5, 1.0 / x, x / 4.0, 1 + x, x + 2

    outs = run(fn, [graphc.spec(("S", 4), dt)], x)
    for got, want in zip(outs, fn(x)):
        assert_close(got, want.astype(dtype))


def test_ndarray_on_the_left_of_every_operator(rng):
    a = randn(rng, (3, 4))
    b = away_from_zero(rng, (4,))
    x = away_from_zero(rng, (3, 4))

    def fn(x):
        return b + x, b - x, b * x, b / x, a - x

    for got, want in zip(run(fn, [graphc.spec((3, 4))], x), fn(x)):
        assert_close(got, want)


def test_unary_minus_and_plus(rng):
    x = randn(rng, (2, 5))
    got = run(lambda x: (-x, +x - (-x)), [graphc.spec(("S", 5))], x)
    assert_close(got[0], -x)
    assert_close(got[1], x + x)


def test_scalar_multiplication_records_scale():
    g = graphc.trace(lambda x: 0.5 * x * 2, graphc.spec(("S", 4)))
    assert g.op_counts().get("scale") == 2
    assert g.op_counts().get("mul") is None


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_broadcasting_matches_numpy_hypothesis(data):
    """Random broadcast-compatible shape pairs (rank 0..3, dims 1..4)."""
    rank_a = data.draw(st.integers(0, 3))
    rank_b = data.draw(st.integers(0, 3))
    rank = max(rank_a, rank_b)
    full = data.draw(st.lists(st.integers(2, 4), min_size=rank, max_size=rank))
    ones = st.booleans()
    sa = tuple(1 if data.draw(ones) else d for d in full[rank - rank_a:])
    sb = tuple(1 if data.draw(ones) else d for d in full[rank - rank_b:])
    r = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a, b = randn(r, sa, np.float64), away_from_zero(r, sb, np.float64)
    f = data.draw(st.sampled_from([lambda x, y: x + y, lambda x, y: x - y,
                                   lambda x, y: x * y, lambda x, y: x / y]))
    got = run(f, [graphc.spec(sa, "float64"), graphc.spec(sb, "float64")], a, b)
    assert_close(np.asarray(got), f(a, b))


def test_T_reverses_axes(rng):
    x = randn(rng, (2, 3, 4))
    g = graphc.trace(lambda x: x.T, graphc.spec((2, "S", 4)))
    assert str(g.output_types[0]) == "f32[4,S,2]"
    assert_close(compile_traced(g)(x), x.T)


TRANSPOSE_FORMS = {
    "no args": lambda t: t.transpose(),
    "None": lambda t: t.transpose(None),
    "tuple": lambda t: t.transpose((2, 0, 1)),
    "list": lambda t: t.transpose([2, 0, 1]),
    "varargs": lambda t: t.transpose(2, 0, 1),
    "negative": lambda t: t.transpose(-1, 0, -2),
    "identity": lambda t: t.transpose(0, 1, 2),
    "np.transpose": lambda t: np.transpose(t, (1, 2, 0)),
    "graphc.transpose": lambda t: graphc.transpose(t, axes=(1, 0, 2)),
}


@pytest.mark.parametrize("form", sorted(TRANSPOSE_FORMS))
def test_transpose_argument_forms(rng, form):
    f = TRANSPOSE_FORMS[form]
    x = randn(rng, (2, 3, 4))
    g = graphc.trace(f, graphc.spec((2, "S", 4)))
    # The symbolic dim moves with its axis.
    want_shape = f(np.empty((2, 99, 4))).shape  # 99 stands in for S
    assert tuple(str(d) for d in g.output_types[0].shape) == \
        tuple("S" if d == 99 else str(d) for d in want_shape)
    assert_close(compile_traced(g)(x), f(x))


def test_reshape_with_minus_one_over_symbolic_dim(rng):
    def fn(x):
        return (x.reshape(-1, 3, 4), x.reshape(x.shape[0] * 3, 4), x.reshape((-1,)),
                x.reshape([x.shape[0], 2, -1]), x.reshape(-1, 6).reshape(x.shape))

    g = graphc.trace(fn, graphc.spec(("S", 12)))
    assert [str(t) for t in g.output_types] == \
        ["f32[S,3,4]", "f32[3*S,4]", "f32[12*S]", "f32[S,2,6]", "f32[S,12]"]
    exe = compile_traced(g)
    for S in (1, 5):
        x = randn(rng, (S, 12))
        for got, want in zip(exe(x), (x.reshape(-1, 3, 4), x.reshape(S * 3, 4), x.ravel(),
                                      x.reshape(S, 2, 6), x)):
            assert_close(got, want)


def test_reshape_of_a_sliced_symbolic_dim(rng):
    """[S-1, 4] -> [S-1, 4, -1]: the hole is 1, not the whole size."""
    def fn(x):
        y = x[1:]
        return y.reshape(y.shape[0], 4, -1), y.reshape(-1, 2)

    g = graphc.trace(fn, graphc.spec(("S", 4)))
    assert [str(t) for t in g.output_types] == ["f32[S-1,4,1]", "f32[2*S-2,2]"]
    x = randn(rng, (5, 4))
    got = compile_traced(g)(x)
    assert_close(got[0], x[1:].reshape(4, 4, 1))
    assert_close(got[1], x[1:].reshape(-1, 2))


def test_shape_returns_symbols_and_ints():
    seen = {}

    def fn(x, y):
        seen["x"] = x.shape
        seen["y"] = y.shape
        seen["ndim"] = x.ndim
        seen["dtypes"] = (x.dtype, y.dtype)
        seen["sum"] = x.shape[0] + y.shape[0]
        return x

    graphc.trace(fn, graphc.spec(("S", 12)), graphc.spec(("T", "S"), "float64"))
    S, T = Sym.of("S"), Sym.of("T")
    assert seen["x"] == (S, 12)
    assert isinstance(seen["x"][0], Sym) and type(seen["x"][1]) is int
    assert seen["y"] == (T, S)
    assert seen["ndim"] == 2
    assert seen["dtypes"] == ("float32", "float64")
    assert np.dtype(seen["dtypes"][0]) == np.float32
    assert str(seen["sum"]) == "S+T"


def test_shape_arithmetic_feeds_ops(rng):
    """Shape values computed from .shape drive reshape: [B, S, 8] -> [B*S, 8]."""
    def fn(x):
        B, S, D = x.shape
        return (x.reshape(B * S, D) @ w).reshape(B, S, -1)

    w = randn(rng, (8, 3))
    x = randn(rng, (2, 5, 8))
    got = run(fn, [graphc.spec((2, "S", 8))], x)
    assert_close(got, x @ w)


def test_integer_floor_division_and_true_division(rng):
    import inspect
    import os
    ids = rng.integers(1, 50, size=(2, 5))
    got = compile_traced(graphc.trace(lambda t: (t // 3, 100 // t),
                                      graphc.spec(("S", 5), "int64")))(ids)
    np.testing.assert_array_equal(got[0], ids // 3)
    np.testing.assert_array_equal(got[1], 100 // ids)
    where = {}

    def true_div(t):
        where["line"] = inspect.currentframe().f_lineno + 1
        return t / 2

    with pytest.raises(graphc.TraceError) as err:
        graphc.trace(true_div, graphc.spec((3,), "int64"))
    assert f"{os.path.basename(__file__)}:{where['line']}" in str(err.value)
    assert "//" in str(err.value)
    with pytest.raises(graphc.TraceError):
        graphc.trace(lambda t: t // 2.0, graphc.spec((3,), "float32"))
