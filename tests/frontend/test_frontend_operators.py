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


# -- comparisons, logic, pow and bool promotion on traced tensors --------------------------

@pytest.fixture(params=[pytest.param(("reference",), id="reference"),
                        pytest.param(("numba", "cupy-emu"), id="compiled",
                                     marks=pytest.mark.slow)])
def backends(request):
    """The CPU backends a test runs its graph on: the reference interpreter in the quick
    suite, numba and cupy-emu in the slow run (a compile each; the op matrix runs every
    comparison, logic op and pow on every backend in the quick suite)."""
    return request.param


def run_everywhere(fn, specs, *arrays, backends):
    """The traced graph's outputs on each of ``backends`` (each must agree with NumPy)."""
    g = graphc.trace(fn, *specs)
    graphc.verify(g)
    return g, [graphc.compile(g, backend=b)(*arrays) for b in backends]


def small_ints(rng, shape, dtype):
    """-3..3: ties are common, so == and <= see equal entries."""
    return rng.integers(-3, 4, shape).astype(dtype)


COMPARE_OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b,
               "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
               ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


@pytest.mark.parametrize("op", sorted(COMPARE_OPS))
@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_comparison_operators_give_bool_tensors(rng, op, dtype, backends):
    f = COMPARE_OPS[op]
    row = small_ints(rng, (4,), dtype)

    def fn(x, y):
        return f(x, y), f(x, 1), f(2, x), f(row, x), f(x, row)
    x, y = small_ints(rng, (5, 4), dtype), small_ints(rng, (5, 4), dtype)
    g, outs = run_everywhere(fn, [graphc.spec(("S", 4), dtype)] * 2, x, y, backends=backends)
    assert [t.dtype for t in g.output_types] == ["bool"] * 5
    # NumPy's reflected forms: 2 < x is x > 2
    want = (f(x, y), f(x, 1), f(np.full(x.shape, 2, dtype), x), f(row, x), f(x, row))
    for out in outs:
        for got, w in zip(out, want):
            assert got.dtype == np.bool_
            np.testing.assert_array_equal(got, w)


def test_bool_mask_times_tensor(rng, backends):
    """x * (ids == 0): the mask takes x's dtype (NumPy, torch), never a Python bool."""
    x = randn(rng, (3, 7))
    ids = rng.integers(0, 3, (3, 7))

    def fn(x, ids):
        m = ids == 0
        assert isinstance(m, graphc.Tensor) and m.dtype == "bool"
        return x * m, m * x, x * (ids != 0) + 1.0, (ids == 1).astype("int64") * ids
    g, outs = run_everywhere(fn, [graphc.spec(("S", 7)), graphc.spec(("S", 7), "int64")],
                             x, ids, backends=backends)
    assert [t.dtype for t in g.output_types] == ["float32", "float32", "float32", "int64"]
    x64 = x.astype(np.float64)
    for out in outs:
        assert_close(out[0], np.where(ids == 0, x64, 0.0).astype(np.float32))
        assert_close(out[1], np.where(ids == 0, x64, 0.0).astype(np.float32))
        assert_close(out[2], (np.where(ids != 0, x64, 0.0) + 1).astype(np.float32))
        np.testing.assert_array_equal(out[3], np.where(ids == 1, ids, 0))


def test_tensor_hash_none_and_membership():
    """__eq__ gives a tensor, so hashing is by identity; == None is False; ``in`` finds
    the same tensor by identity and is a trace error (at the user's line) otherwise."""
    import inspect
    import os
    seen = {}

    def fn(x, y):
        z = x + 1.0
        seen["set"] = len({x, y, x, z})
        seen["dict"] = {x: "x", y: "y"}[y]
        seen["none"] = (x == None, x != None, None == x)  # noqa: E711
        seen["same"] = x in [x, y] and x in (x,)      # identity, before any ==
        seen["line"] = inspect.currentframe().f_lineno + 1
        seen["other"] = x in [y]
        return z
    with pytest.raises(graphc.TraceError) as e:
        graphc.trace(fn, graphc.spec((3,)), graphc.spec((3,)))
    assert seen["set"] == 3 and seen["dict"] == "y"
    assert seen["none"] == (False, True, False) and seen["same"] is True
    assert f"{os.path.basename(__file__)}:{seen['line']}" in str(e.value)
    assert " in " in str(e.value) and " is " in str(e.value)


def test_int_tensor_compared_with_float_numbers(rng):
    """NumPy compares the values (int64 < 0.5 is int64 < 1), whatever the number's type:
    not the number truncated to the tensor's dtype. On every backend in the quick suite:
    the renderers' constants must compare by value too."""
    backends = ("reference", "numba", "cupy-emu")
    ids = rng.integers(-4, 5, (4, 6))

    def fn(i, j):
        return (i < 0.5, i == 2.5, i != -1.5, i <= np.float32(1.5), i > np.float64(-0.5),
                i >= 2.0, 0.5 > j, j == np.float32(3.0), j < 2**40)
    g, outs = run_everywhere(fn, [graphc.spec(("S", 6), "int64"),
                                  graphc.spec(("S", 6), "int32")], ids, ids.astype(np.int32),
                             backends=backends)
    want = (ids < 0.5, ids == 2.5, ids != -1.5, ids <= 1.5, ids > -0.5, ids >= 2,
            0.5 > ids, ids == 3, ids < 2**40)
    for out in outs:
        for got, w in zip(out, want):
            assert got.dtype == np.bool_
            np.testing.assert_array_equal(got, w)


@pytest.mark.parametrize("expr", ["i + np.float32(0.5)", "i * 0.5", "0.5 - i",
                                  "np.float64(2.0) * i", "i // 2.0", "i + 2**40",
                                  "i - np.float32(1.0)"])
def test_int_tensor_with_float_number_arithmetic_is_an_error(expr):
    """NumPy gives floats; graphc asks for the cast (never truncates the number)."""
    fn = eval(f"lambda i: {expr}", {"np": np})
    with pytest.raises(graphc.TraceError, match="cast|int32") as e:
        graphc.trace(fn, graphc.spec((4,), "int32"))
    assert "<string>:1" in str(e.value)      # the user's line


def test_bool_arithmetic_follows_numpy_and_torch(rng, backends):
    """bool + bool is or, bool * bool is and (bool results, as in NumPy and torch);
    with a number or a numeric tensor the bool takes that dtype; bool / bool is float."""
    a, b = rng.random((5, 4)) < 0.5, rng.random((5, 4)) < 0.5
    a[0, 0], b[0, 0] = True, True              # True + True stays True
    x = randn(rng, (5, 4))

    def fn(a, b, x):
        return a + b, a * b, a + True, b * False, a + 1, a * 2.5, a / (b | True), x + a
    g, outs = run_everywhere(fn, [graphc.spec(("S", 4), "bool")] * 2 + [graphc.spec(("S", 4))],
                             a, b, x, backends=backends)
    assert [t.dtype for t in g.output_types] == ["bool", "bool", "bool", "bool", "int64",
                                                 "float32", "float32", "float32"]
    want = (a | b, a & b, np.ones(a.shape, bool), np.zeros(a.shape, bool),
            a.astype(np.int64) + 1, (a * 2.5).astype(np.float32), a.astype(np.float32),
            (x.astype(np.float64) + a).astype(np.float32))
    for out in outs:
        for got, w in zip(out, want):
            if w.dtype.kind == "f":
                assert_close(got, w)
            else:
                assert got.dtype == w.dtype
                np.testing.assert_array_equal(got, w)


@pytest.mark.parametrize("expr,match", [("a - b", r"\^"), ("-a", "bool"), ("a // b", "bool")])
def test_bool_arithmetic_numpy_refuses_is_an_error(expr, match):
    fn = eval(f"lambda a, b: {expr}")
    with pytest.raises(graphc.GraphcError, match=match):
        graphc.trace(fn, graphc.spec((4,), "bool"), graphc.spec((4,), "bool"))


def test_logic_operators_on_bool(rng, backends):
    a, b = rng.random((6, 3)) < 0.5, rng.random((3,)) < 0.5
    x = randn(rng, (6, 3))

    def fn(a, b, x):
        return (a & b, a | b, a ^ b, ~a, b & a, a | False, True ^ a, b & (x > 0),
                (x > 0) | (x < -1), ~(x < 0) & a)
    g, outs = run_everywhere(fn, [graphc.spec(("S", 3), "bool"), graphc.spec((3,), "bool"),
                                  graphc.spec(("S", 3))], a, b, x, backends=backends)
    assert all(t.dtype == "bool" for t in g.output_types)
    want = (a & b, a | b, a ^ b, ~a, b & a, a, ~a, b & (x > 0), (x > 0) | (x < -1),
            (x >= 0) & a)
    for out in outs:
        for got, w in zip(out, want):
            np.testing.assert_array_equal(got, w)


@pytest.mark.parametrize("expr", ["i & j", "i | 1", "i ^ j", "~i", "m & i", "m | 1"])
def test_bitwise_ops_on_ints_are_a_clear_error(expr):
    fn = eval(f"lambda i, j, m: {expr}")
    with pytest.raises(graphc.TraceError, match="bool") as e:
        graphc.trace(fn, graphc.spec((4,), "int64"), graphc.spec((4,), "int64"),
                     graphc.spec((4,), "bool"))
    assert "<string>:1" in str(e.value) and "bitwise" in str(e.value)


POW_FORMS = [(2, "mul"), (2.0, "mul"), (0.5, "sqrt"), (-0.5, "rsqrt"), (-1, "reciprocal"),
             (1, None), (3, "pow"), (-2, "pow"), (2.5, "pow"), (0, "pow"), (-1.5, "pow")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("p,op", POW_FORMS, ids=str)
def test_pow_operator_lowers_small_exponents(rng, p, op, dtype):
    x = np.asarray(rng.uniform(0.5, 2.0, (4, 5)), dtype)
    g = graphc.trace(lambda x: x ** p, graphc.spec(("S", 5), dtype))
    ops = {k for k in g.op_counts() if k not in ("input", "constant")}
    assert ops == ({op} if op else set())
    assert_close(compile_traced(g)(x), (x.astype(np.float64) ** float(p)).astype(dtype))


def test_pow_operator_forms(rng, backends):
    """Tensor exponents, a number as the base, integer and bool tensors."""
    x = np.asarray(rng.uniform(0.5, 2.0, (3, 4)), np.float32)
    y = randn(rng, (3, 4))
    i = rng.integers(-5, 6, (3, 4))
    j = rng.integers(0, 5, (3, 4))
    m = rng.random((3, 4)) < 0.5

    def fn(x, y, i, j, m):
        return x ** y, 2.0 ** y, x.pow(y), i ** 3, 2 ** j, (-1) ** i, m ** 2, m ** 0.5
    g, outs = run_everywhere(fn, [graphc.spec(("S", 4))] * 2
                             + [graphc.spec(("S", 4), "int64")] * 2
                             + [graphc.spec(("S", 4), "bool")], x, y, i, j, m, backends=backends)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    want = (np.exp(y64 * np.log(x64)), np.exp(y64 * np.log(2)), np.exp(y64 * np.log(x64)),
            i * i * i, np.array([[1 << int(k) for k in r] for r in j]),
            np.where(i % 2 == 0, 1, -1), m.astype(np.int64), m.astype(np.float64))
    for out in outs:
        for got, w in zip(out, want):
            if got.dtype.kind == "f":
                assert_close(got, w.astype(got.dtype))
            else:
                np.testing.assert_array_equal(got, w)
                assert got.dtype == np.int64


@pytest.mark.parametrize("expr", ["i ** -1", "i ** 0.5", "2.5 ** i", "i ** np.float32(2)"])
def test_pow_operator_int_misuse_is_an_error(expr):
    fn = eval(f"lambda i: {expr}", {"np": np})
    with pytest.raises(graphc.TraceError, match="cast"):
        graphc.trace(fn, graphc.spec((4,), "int64"))


def test_torch_style_methods(rng):
    """Methods call the graphc ops NumPy and torch users expect, with their results."""
    x, y = randn(rng, (3, 4, 5)), randn(rng, (3, 4, 5))

    def fn(x, y):
        return (x.clamp(min=-0.5), x.clip(-0.5, 0.25), x.masked_fill(x > 0, -2.0),
                x.where(y > 0, y), x.pow(2), x.eq(y).logical_not(), x.gt(0).logical_and(y.lt(0)),
                x.sin(), x.cos().abs(), (x > 0).float(), x.sum(dim=1, keepdim=True),
                x.mean(axis=(0, 2)), x.permute(2, 0, 1), x.mT, x.flatten(1), x.neg(),
                x.exp().log(), x.softmax(-1), x.max(dim=1).values, x.max(y), x.min(y))
    outs = compile_traced(graphc.trace(fn, graphc.spec((3, "S", 5)),
                                       graphc.spec((3, "S", 5))))(x, y)
    a, b = x.astype(np.float64), y.astype(np.float64)
    e = np.exp(a - a.max(-1, keepdims=True))
    want = (np.maximum(a, -0.5), np.minimum(np.maximum(a, -0.5), 0.25), np.where(a > 0, -2, a),
            np.where(b > 0, a, b), a * a, a != b, (a > 0) & (b < 0), np.sin(a),
            np.abs(np.cos(a)), (a > 0).astype(np.float64), a.sum(1, keepdims=True),
            a.mean((0, 2)), a.transpose(2, 0, 1), a.swapaxes(-1, -2), a.reshape(3, -1), -a, a,
            e / e.sum(-1, keepdims=True), a.max(1), np.maximum(a, b), np.minimum(a, b))
    assert len(outs) == len(want)
    for got, w in zip(outs, want):
        if got.dtype == np.bool_:
            np.testing.assert_array_equal(got, w)
        else:
            assert_close(got, w.astype(np.float32))


@pytest.mark.parametrize("ufunc", ["invert", "bitwise_not"])
def test_numpy_bitwise_ufuncs_do_not_suggest_logical_ops(ufunc):
    """np.invert(int tensor) must not be pointed at logical_not (a different result)."""
    f = getattr(np, ufunc)

    def fn(i):
        return f(i)
    with pytest.raises(graphc.TraceError) as e:
        graphc.trace(fn, graphc.spec((4,), "int64"))
    assert "logical_not(" not in str(e.value) and "bitwise" in str(e.value)
