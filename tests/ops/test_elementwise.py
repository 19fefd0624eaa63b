"""Elementwise ops on the reference backend against NumPy written here."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import graphc
from graphc import spec
from opcheck import (FLOATS, assert_matches, assert_reported_at, check, check_same,
                     concrete, erf64, line_in, next_line, nonzero, positive, randn,
                     upcast)

# Spec shapes for binary ops: broadcasting, 0-d, and symbolic dims bound at call time.
BINARY_SHAPES = [
    ((3, 4), (3, 4)),
    ((2, 3, 4), (4,)),
    ((2, 1, 4), (3, 1)),
    ((5,), (2, 3, 5)),
    ((), (3,)),
    (("S", 8), (8,)),
    (("S", 1), (1, 8)),
    (("S", 8), ("S", 8)),
    ((2, "S", 4), ("S", 1)),
]
SIZES = [{"S": 1}, {"S": 5}]

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "maximum": lambda a, b: np.where(a >= b, a, b),
    "minimum": lambda a, b: np.where(a <= b, a, b),
}


def _cases(rng, shapes, dtype, make=randn, make_b=None):
    make_b = make_b or make
    return [(make(rng, concrete(shapes[0], s), dtype), make_b(rng, concrete(shapes[1], s), dtype))
            for s in SIZES]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_float(name, shapes, dtype, rng):
    op = getattr(graphc, name)
    make_b = nonzero if name == "div" else randn
    check(lambda a, b: op(a, b), [spec(s, dtype) for s in shapes],
          _cases(rng, shapes, dtype, make_b=make_b), BINARY[name], out_dtypes=[dtype])


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_int(name, dtype, rng):
    shapes = (("S", 4), (4,))
    cases = []
    for s in SIZES:
        a = rng.integers(-50, 50, concrete(shapes[0], s)).astype(dtype)
        b = rng.integers(1, 7, concrete(shapes[1], s)) * rng.choice([-1, 1], size=4)
        cases.append((a, b.astype(dtype)))
    expected = dict(BINARY)
    # Integer division floors (rounds toward -inf), like Python's //.
    expected["div"] = lambda a, b: np.floor(a.astype(np.float64) / b).astype(np.int64)
    op = getattr(graphc, name)
    check(lambda a, b: op(a, b), [spec(s, dtype) for s in shapes], cases, expected[name],
          out_dtypes=[dtype])


def test_int_division_floors():
    out = graphc.div(np.array([7, -7, 7, -7], np.int32), np.array([2, 2, -2, -2], np.int32))
    np.testing.assert_array_equal(out, [3, -4, -4, 3])
    assert out.dtype == np.int32


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4))
def test_add_broadcasting_any_shapes(shapes, rng):
    a_shape, b_shape = shapes.input_shapes
    a, b = randn(rng, a_shape), randn(rng, b_shape)
    out = graphc.compile(graphc.trace(lambda x, y: x + y, spec(a_shape), spec(b_shape)))(a, b)
    assert out.shape == shapes.result_shape
    a64 = a.astype(np.float64)
    assert_matches(out, a64 + b, np.float32, magnitude=np.abs(a64) + np.abs(b))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shapes", [((3, 4), (4,)), (("S", 8), ("S", 1)), ((), (2, 2))],
                         ids=str)
@pytest.mark.parametrize("name", ["less", "greater"])
def test_comparisons(name, shapes, dtype, rng):
    op = getattr(graphc, name)
    cases = _cases(rng, shapes, dtype)
    # Make some entries equal, where < and > are both False.
    a, b = cases[1]
    if a.shape == np.broadcast_shapes(a.shape, b.shape) and a.size:
        a.flat[0] = np.broadcast_to(b, a.shape).flat[0]
    want = {"less": lambda a, b: a < b, "greater": lambda a, b: b < a}[name]
    check(lambda a, b: op(a, b), [spec(s, dtype) for s in shapes], cases, want,
          out_dtypes=["bool"])


@pytest.mark.parametrize("dtype", FLOATS + ("int32",))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4), (3, 4)), ((3, 1), (4,), (3, 4)),
                                    (("S", 8), ("S", 8), (8,)), ((4,), (), (4,))], ids=str)
def test_where(shapes, dtype, rng):
    def fn(c, a, b):
        return graphc.where(c, a, b)
    cases = []
    for s in SIZES:
        c = rng.random(concrete(shapes[0], s)) < 0.5
        a = randn(rng, concrete(shapes[1], s), "float64") * 10
        b = randn(rng, concrete(shapes[2], s), "float64") * 10
        cases.append((c, np.asarray(a, dtype), np.asarray(b, dtype)))
    # Blend with masks instead of np.where.
    check(fn, [spec(shapes[0], "bool"), spec(shapes[1], dtype), spec(shapes[2], dtype)],
          cases, lambda c, a, b: c * a + (~c) * b, out_dtypes=[dtype])


def _away_from_one(rng, shape, dtype):
    """Positive values not near 1, where log(x) ~ 0 makes relative error meaningless."""
    x = rng.uniform(0.25, 0.8, shape)
    return np.asarray(np.where(rng.random(shape) < 0.5, x, 1 / x), dtype)


def _log1p_input(rng, shape, dtype):
    """x > -1 with 1 + x away from 1 (where log(1 + x) ~ 0)."""
    return np.asarray(_away_from_one(rng, shape, "float64") - 1, dtype)


def _gelu_exact(x):
    return 0.5 * x * (1 + erf64(x / np.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


# name -> (traced call, expected in float64, input maker)
UNARY = {
    "neg": (graphc.neg, lambda x: 0 - x, randn),
    "exp": (graphc.exp, lambda x: np.e ** x, randn),
    "log": (graphc.log, lambda x: np.log2(x) * np.log(2.0), _away_from_one),
    "sqrt": (graphc.sqrt, lambda x: x ** 0.5, positive),
    "rsqrt": (graphc.rsqrt, lambda x: x ** -0.5, positive),
    "tanh": (graphc.tanh, lambda x: 1 - 2 / (np.exp(2 * x) + 1), randn),
    "sigmoid": (graphc.sigmoid, lambda x: 0.5 * (1 + np.tanh(x / 2)), randn),
    "erf": (graphc.erf, erf64, randn),
    "relu": (graphc.relu, lambda x: x * (x > 0), randn),
    "silu": (graphc.silu, lambda x: x / (1 + np.exp(-x)), randn),
    "gelu": (graphc.gelu, _gelu_exact, randn),
    "gelu_tanh": (lambda x: graphc.gelu(x, approximate="tanh"), _gelu_tanh, randn),
    "sin": (graphc.sin, lambda x: np.cos(x - np.pi / 2), randn),
    "cos": (graphc.cos, lambda x: np.sin(x + np.pi / 2), randn),
    "log1p": (graphc.log1p, lambda x: np.log(1 + x), _log1p_input),
    "expm1": (graphc.expm1, lambda x: np.exp(x) - 1, randn),
    "floor": (graphc.floor, lambda x: x - np.mod(x, 1.0), randn),
    "ceil": (graphc.ceil, lambda x: -np.floor(-x), randn),
    "abs": (graphc.abs, lambda x: np.where(x < 0, -x, x), randn),
    "sign": (graphc.sign, lambda x: (x > 0).astype(x.dtype) - (x < 0), randn),
    "reciprocal": (graphc.reciprocal, lambda x: x ** -1.0, nonzero),
    "softplus": (graphc.softplus, lambda x: np.log(1 + np.exp(x)), randn),
}
UNARY_SHAPES = [(7,), (3, 5), (2, 3, 4), ("S", 8), ()]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", UNARY_SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, shape, dtype, rng):
    op, want, make = UNARY[name]
    cases = [(make(rng, concrete(shape, s), dtype),) for s in SIZES]
    check(lambda x: op(x), [spec(shape, dtype)], cases, want, out_dtypes=[dtype])


@pytest.mark.parametrize("name", ["sigmoid", "silu", "tanh", "exp", "gelu", "gelu_tanh"])
def test_unary_large_inputs_stay_finite(name, rng):
    op, want, _ = UNARY[name]
    x = randn(rng, (4, 16), "float64") * 30
    x[0, :4] = [-80.0, 80.0, -700.0, 700.0] if name != "exp" else [-80.0, 80.0, -5, 5]
    out = graphc.compile(graphc.trace(lambda x: op(x), spec(x.shape, "float64")))(x)
    with np.errstate(over="ignore"):
        assert_matches(out, want(x), np.float64, tol=1e-10)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_neg_int(dtype, rng):
    x = rng.integers(-100, 100, (3, 4)).astype(dtype)
    check(lambda x: -x, [spec((3, 4), dtype)], [(x,)], lambda x: 0 - x, out_dtypes=[dtype])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("factor", [0.5, -3.0, 2, 1e-3])
@pytest.mark.parametrize("shape", [(4,), (2, 3), ("S", 8)], ids=str)
def test_scale(shape, factor, dtype, rng):
    cases = [(randn(rng, concrete(shape, s), dtype),) for s in SIZES]
    g = check(lambda x: graphc.scale(x, factor), [spec(shape, dtype)], cases,
              lambda x: x * float(factor), out_dtypes=[dtype])
    assert [n.op for n in g if n.op not in ("input", "constant")] == ["scale"]


def test_python_number_times_tensor_is_scale(rng):
    g = check(lambda x: 2.5 * x * 4, [spec(("S", 3))], [(randn(rng, (5, 3)),)],
              lambda x: x * 10.0)
    assert g.op_counts().get("scale") == 2


CASTS = [("float32", "float64"), ("float64", "float32"), ("float32", "int32"),
         ("float64", "int64"), ("int32", "float32"), ("int64", "float64"),
         ("int32", "int64"), ("int64", "int32"), ("float32", "bool"), ("int32", "bool"),
         ("bool", "float32"), ("bool", "int64")]


def _cast_input(rng, shape, dtype):
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith("int"):
        return rng.integers(-1000, 1000, shape).astype(dtype)
    x = randn(rng, shape, "float64") * 100
    x.flat[0] = 0.0  # cast of zero to bool is False
    return x.astype(dtype)


def _cast_expected(x, to):
    if to == "bool":
        return x != 0
    if to.startswith("int") and x.dtype.kind == "f":
        return np.trunc(x).astype(np.int64)  # toward zero, like C
    return x


@pytest.mark.parametrize("src,dst", CASTS)
def test_cast(src, dst, rng):
    shape = ("S", 6)
    cases = [(_cast_input(rng, concrete(shape, s), src),) for s in SIZES]
    g = graphc.trace(lambda x: graphc.cast(x, dtype=dst), spec(shape, src))
    assert g.output_types[0].dtype == dst
    exe = graphc.compile(g, backend="reference")
    exe64 = graphc.compile(g, backend="reference", float64=True)
    for (x,) in cases:
        want = _cast_expected(upcast(x), dst)
        assert_matches(exe(x), want, dst)
        # Oracle mode widens float32 results to float64 and leaves ints and bools alone.
        assert_matches(exe64(x), want, "float64" if dst == "float32" else dst)


def test_astype_method_is_cast(rng):
    x = randn(rng, (4, 3))
    g = check(lambda x: x.astype(np.float64), [spec((4, 3))], [(x,)], lambda x: x,
              out_dtypes=["float64"])
    assert "cast" in g.op_counts()


# -- decompositions ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(5,), (3, 4), ("S", 8)], ids=str)
@pytest.mark.parametrize("name,attrs", [("gelu", {}), ("gelu", {"approximate": "none"}),
                                        ("gelu", {"approximate": "tanh"}), ("silu", {})])
def test_decomposition_matches_op(name, attrs, shape, dtype, rng):
    op = graphc.get_op(name)
    assert op.decompose is not None
    full = {k: v for k, v in op.attrs.items()}
    full.update(attrs)
    cases = [(randn(rng, concrete(shape, s), dtype) * 3,) for s in SIZES]
    _, gd = check_same(lambda x: op(x, **attrs), lambda x: op.decompose(x, **full),
                       [spec(shape, dtype)], cases)
    assert name not in gd.op_counts(), "the decomposition must use primitives only"


# -- eager calls ------------------------------------------------------------------------

def test_eager_calls_return_numpy(rng):
    a, b = randn(rng, (3, 4)), nonzero(rng, (4,))
    a64 = a.astype(np.float64)
    p = _away_from_one(rng, (6,), "float64")
    f32, f64 = np.float32, np.float64
    for got, want, dtype in [
            (graphc.add(a, b), a64 + b, f32), (graphc.sub(a, b), a64 - b, f32),
            (graphc.mul(a, b), a64 * b, f32), (graphc.div(a, b), a64 / b, f32),
            (graphc.maximum(a, b), np.fmax(a64, b), f32),
            (graphc.minimum(a, b), np.fmin(a64, b), f32),
            (graphc.neg(a), -a64, f32), (graphc.exp(a), np.e ** a64, f32),
            (graphc.tanh(a), 1 - 2 / (np.exp(2 * a64) + 1), f32),
            (graphc.sigmoid(a), 1 / (1 + np.exp(-a64)), f32),
            (graphc.relu(a), np.fmax(a64, 0), f32), (graphc.erf(a), erf64(a64), f32),
            (graphc.gelu(a), _gelu_exact(a64), f32),
            (graphc.gelu(a, approximate="tanh"), _gelu_tanh(a64), f32),
            (graphc.silu(a), a64 / (1 + np.exp(-a64)), f32),
            (graphc.scale(a, 3.0), 3 * a64, f32),
            (graphc.where(a > 0, a, 2 * a), np.choose(a > 0, [2 * a64, a64]), f32),
            (graphc.cast(a, dtype="float64"), a64, f64),
            (graphc.log(p), np.log2(p) * np.log(2.0), f64), (graphc.sqrt(p), p ** 0.5, f64),
            (graphc.rsqrt(p), p ** -0.5, f64),
            (graphc.less(a, b), a64 < b, np.bool_), (graphc.greater(a, b), a64 > b, np.bool_)]:
        assert type(got) is np.ndarray
        assert_matches(got, want, dtype)


def test_eager_keeps_dtype_float64(rng):
    x = randn(rng, (2, 5), "float64")
    out = graphc.gelu(x)
    assert out.dtype == np.float64
    assert_matches(out, _gelu_exact(x), np.float64)


# -- errors ----------------------------------------------------------------------------

def test_mixed_dtypes_error_names_line():
    def fn(a, b):
        return graphc.add(a, b)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((3,), "float32"), spec((3,), "float64"))
    assert_reported_at(ei.value, line_in(fn), "add")


def test_broadcast_mismatch_error_names_line():
    def fn(a, b):
        return a * b
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec((3, 4)), spec((5,)))
    assert_reported_at(ei.value, line_in(fn), "mul")
    assert "[3,4]" in str(ei.value) and "[5]" in str(ei.value)


def test_different_symbols_do_not_broadcast():
    def fn(a, b):
        return a - b
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec(("S", 8)), spec(("T", 8)))
    assert_reported_at(ei.value, line_in(fn), "sub")


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf",
                                  "relu", "silu", "gelu", "sin", "cos", "floor", "ceil",
                                  "reciprocal", "softplus", "log1p", "expm1"])
def test_float_only_ops_reject_ints(name):
    op = getattr(graphc, name)

    def fn(x):
        return op(x)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((4,), "int32"))
    assert_reported_at(ei.value, line_in(fn), name)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
def test_arithmetic_rejects_bool(name):
    op = getattr(graphc, name)

    def fn(a, b):
        return op(a, b)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((4,), "bool"), spec((4,), "bool"))
    assert_reported_at(ei.value, line_in(fn), name)


def test_neg_rejects_bool_eagerly():
    with pytest.raises(graphc.DTypeError) as ei:
        at = next_line()
        graphc.neg(np.array([True, False]))
    assert_reported_at(ei.value, at, "neg")


def test_gelu_bad_approximate():
    def fn(x):
        return graphc.gelu(x, approximate="fast")
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((4,)))
    assert_reported_at(ei.value, line_in(fn), "gelu")


def test_unknown_attribute_names_line(rng):
    with pytest.raises(graphc.AttrError) as ei:
        at = next_line()
        graphc.gelu(randn(rng, (3,)), approx="tanh")
    assert_reported_at(ei.value, at, "gelu")


def test_wrong_operand_count_names_line(rng):
    def fn(x):
        return graphc.add(x)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3,)))
    assert_reported_at(ei.value, line_in(fn), "add")


@pytest.mark.parametrize("factor", ["abc", None, [1, 2]])
def test_scale_bad_factor(factor):
    def fn(x):
        return graphc.scale(x, factor=factor)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((4,)))
    assert_reported_at(ei.value, line_in(fn), "scale")


def test_scale_missing_factor():
    def fn(x):
        return graphc.scale(x)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((4,)))
    assert_reported_at(ei.value, line_in(fn), "scale")


def test_scale_rejects_ints():
    def fn(x):
        return graphc.scale(x, 2.0)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((4,), "int64"))
    assert_reported_at(ei.value, line_in(fn), "scale")


@pytest.mark.parametrize("dtype", ["int8", "float16", "complex64", "nonsense"])
def test_cast_bad_dtype(dtype):
    def fn(x):
        return graphc.cast(x, dtype=dtype)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((4,)))
    assert_reported_at(ei.value, line_in(fn), "cast")


def test_where_needs_bool_condition():
    def fn(c, a):
        return graphc.where(c, a, a)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((4,)), spec((4,)))
    assert_reported_at(ei.value, line_in(fn), "where")


def test_where_branches_must_share_dtype():
    def fn(c, a, b):
        return graphc.where(c, a, b)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((4,), "bool"), spec((4,), "float32"), spec((4,), "float64"))
    assert_reported_at(ei.value, line_in(fn), "where")


# -- Python numbers as operands ---------------------------------------------------------

@pytest.mark.parametrize("dtype,other", [("float64", 2.0), ("float32", 0), ("int32", 0)])
def test_where_with_python_number_branch(dtype, other, rng):
    """The number takes the dtype of the branch, not of the bool condition."""
    x = np.asarray(randn(rng, (3, 4), "float64") * 10, dtype)
    check(lambda x: graphc.where(x > 0, x, other), [spec((3, 4), dtype)], [(x,)],
          lambda x: np.choose(x > 0, [np.full(x.shape, float(other)), x]),
          out_dtypes=[dtype])


def test_eager_python_number_operand(rng):
    """A Python number takes the array's dtype, as it does inside a trace."""
    x = randn(rng, (3, 4))
    x64 = x.astype(np.float64)
    for got, want in [(graphc.add(x, 1.0), x64 + 1), (graphc.sub(2, x), 2 - x64),
                      (graphc.maximum(x, 0.0), np.fmax(x64, 0)), (graphc.mul(x, 3), 3 * x64)]:
        assert_matches(got, want, np.float32)


# -- comparisons and logic --------------------------------------------------------------

COMPARE = {
    "equal": lambda a, b: ~((a < b) | (b < a)),
    "not_equal": lambda a, b: (a < b) | (b < a),
    "less_equal": lambda a, b: ~(b < a),
    "greater_equal": lambda a, b: ~(a < b),
}


def _small_ints(rng, shape, dtype):
    """Values in -3..3: many ties, so == and <= see equal entries."""
    return rng.integers(-3, 4, shape).astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS + ("int32", "int64"))
@pytest.mark.parametrize("shapes", [((3, 4), (4,)), (("S", 8), ("S", 1)), ((), (2, 2))],
                         ids=str)
@pytest.mark.parametrize("name", sorted(COMPARE))
def test_comparisons_with_ties(name, shapes, dtype, rng):
    op = getattr(graphc, name)
    cases = _cases(rng, shapes, dtype, make=_small_ints)
    check(lambda a, b: op(a, b), [spec(s, dtype) for s in shapes], cases, COMPARE[name],
          out_dtypes=["bool"])


@pytest.mark.parametrize("name", sorted(COMPARE))
def test_comparisons_of_bools(name, rng):
    cases = [(rng.random((S, 5)) < 0.5, rng.random((5,)) < 0.5) for S in (1, 4)]
    # bools order as ints: False < True
    want = lambda a, b: COMPARE[name](a.astype(np.int64), b.astype(np.int64))  # noqa: E731
    check(lambda a, b: getattr(graphc, name)(a, b), [spec(("S", 5), "bool"),
                                                    spec((5,), "bool")], cases, want,
          out_dtypes=["bool"])


LOGIC = {
    "logical_and": lambda a, b: a * b == 1,
    "logical_or": lambda a, b: a + b >= 1,
    "logical_xor": lambda a, b: a + b == 1,
}


@pytest.mark.parametrize("shapes", [((3, 4), (4,)), (("S", 8), ("S", 1)), ((), (5,))],
                         ids=str)
@pytest.mark.parametrize("name", sorted(LOGIC))
def test_logic(name, shapes, rng):
    op = getattr(graphc, name)
    cases = [tuple(np.asarray(rng.random(concrete(sh, s)) < 0.5) for sh in shapes)
             for s in SIZES]
    check(lambda a, b: op(a, b), [spec(s, "bool") for s in shapes], cases,
          lambda a, b: LOGIC[name](a.astype(np.int64), b.astype(np.int64)),
          out_dtypes=["bool"])


def test_logical_not(rng):
    cases = [(rng.random((S, 3)) < 0.5,) for S in (1, 6)]
    check(lambda a: graphc.logical_not(a), [spec(("S", 3), "bool")], cases,
          lambda a: a.astype(np.int64) == 0, out_dtypes=["bool"])


@pytest.mark.parametrize("name", sorted(LOGIC) + ["logical_not"])
@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_logic_rejects_non_bool(name, dtype):
    op = getattr(graphc, name)

    def fn(a):
        return op(a) if name == "logical_not" else op(a, a)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((4,), dtype))
    assert_reported_at(ei.value, line_in(fn), name)
    assert "compare first" in str(ei.value) and dtype in str(ei.value)


# -- pow ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shapes", [((3, 4), (4,)), (("S", 8), ("S", 1)), ((), (3,))],
                         ids=str)
def test_pow_positive_base(shapes, dtype, rng):
    cases = _cases(rng, shapes, dtype, make=positive, make_b=randn)
    check(lambda a, b: graphc.pow(a, b), [spec(s, dtype) for s in shapes], cases,
          lambda a, b: np.exp(b * np.log(a)), out_dtypes=[dtype])


@pytest.mark.parametrize("dtype", FLOATS)
def test_pow_negative_base(dtype, rng):
    """An integer exponent of a negative base is the signed power; a non-integer one is
    NaN, as NumPy gives."""
    a = randn(rng, (4, 6), dtype)
    a[:, 0] = -np.abs(a[:, 0])
    b = rng.integers(-3, 4, (4, 6)).astype(dtype)
    b[:, 1:3] = np.asarray([0.5, -1.5], dtype)

    def want(a, b):
        out = np.empty(np.broadcast_shapes(a.shape, b.shape))
        for i in np.ndindex(out.shape):
            x, p = float(a[i]), float(b[i])
            if p == int(p):
                out[i] = np.sign(x) ** int(p) * abs(x) ** p
            else:
                out[i] = abs(x) ** p if x >= 0 else float("nan")
        return out
    check(lambda a, b: graphc.pow(a, b), [spec((4, 6), dtype)] * 2, [(a, b)], want,
          out_dtypes=[dtype])


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_pow_int(dtype, rng):
    a = rng.integers(-6, 7, (3, 5)).astype(dtype)
    b = rng.integers(0, 5, (5,)).astype(dtype)

    def want(a, b):
        out = np.ones(np.broadcast_shapes(a.shape, b.shape), np.int64)
        for k in range(int(b.max())):     # a multiplied in b times
            out = np.where(k < b, out * a, out)
        return out
    check(lambda a, b: graphc.pow(a, b), [spec((3, 5), dtype), spec((5,), dtype)],
          [(a, b)], want, out_dtypes=[dtype])


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("backend", ["reference", "numba", "cupy-emu"])
def test_pow_int_negative_exponent_truncates_like_torch(backend, dtype, rng):
    """An integer tensor to a negative integer tensor power: the exact power truncated
    toward zero (torch's result: 1 and -1 keep their power, every other base gives 0,
    0 included), the same on every backend (NumPy refuses it; a kernel cannot)."""
    a = rng.integers(-4, 5, (6, 9))
    a[:, :3] = [0, 1, -1]
    b = rng.integers(-5, 4, (6, 9))
    b[0] = -rng.integers(1, 6, 9)
    exe = graphc.compile(graphc.trace(lambda a, b: graphc.pow(a, b), spec((6, 9), dtype),
                                      spec((6, 9), dtype)), backend=backend)
    from fractions import Fraction
    want = np.vectorize(lambda x, p: 0 if x == 0 and p < 0 else int(Fraction(x) ** int(p)),
                        otypes=[np.int64])(a, b)
    assert_matches(exe(a.astype(dtype), b.astype(dtype)), want, dtype)


def test_pow_rejects_bool():
    def fn(a):
        return graphc.pow(a, a)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((4,), "bool"))
    assert_reported_at(ei.value, line_in(fn), "pow")


# -- isnan / isinf -------------------------------------------------------------------------

def _specials(rng, shape, dtype):
    x = randn(rng, shape, dtype)
    flat = x.reshape(-1)
    k = rng.permutation(flat.size)
    flat[k[:flat.size // 4]] = np.nan
    flat[k[flat.size // 4:flat.size // 2]] = np.inf
    flat[k[flat.size // 2:flat.size // 2 + 2]] = -np.inf
    return x


@pytest.mark.parametrize("dtype", FLOATS)
def test_isnan_isinf(dtype, rng):
    cases = [(_specials(rng, (S, 7), dtype),) for S in (1, 4)]
    check(lambda x: (graphc.isnan(x), graphc.isinf(x)), [spec(("S", 7), dtype)], cases,
          lambda x: (x != x, (x == np.inf) | (x == -np.inf)), out_dtypes=["bool", "bool"],
          oracle=False)


def test_isnan_isinf_of_ints_are_false(rng):
    x = rng.integers(-5, 5, (3, 4))
    check(lambda x: (graphc.isnan(x), graphc.isinf(x)), [spec((3, 4), "int64")], [(x,)],
          lambda x: (np.zeros(x.shape, bool), np.zeros(x.shape, bool)))


# -- clip, softplus, int abs / sign ----------------------------------------------------------

CLIPS = [(-0.5, 0.75), (0.0, None), (None, 0.25), (1.0, -1.0), (-1, 1)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("lo,hi", CLIPS, ids=str)
def test_clip(lo, hi, dtype, rng):
    def want(x):
        out = x.copy()
        if lo is not None:
            out[out < lo] = lo
        if hi is not None:
            out[out > hi] = hi
        return out
    cases = [(randn(rng, (S, 6), dtype),) for S in (1, 5)]
    check(lambda x: graphc.clip(x, min=lo, max=hi), [spec(("S", 6), dtype)], cases, want,
          out_dtypes=[dtype])


def test_clip_positional_and_nan(rng):
    x = randn(rng, (8,), "float64")
    x[0] = np.nan
    out = graphc.compile(graphc.trace(lambda x: graphc.clip(x, -0.1, 0.1),
                                      spec((8,), "float64")))(x)
    assert np.isnan(out[0]) and np.all(np.abs(out[1:]) <= 0.1)
    np.testing.assert_array_equal(out, np.clip(x, -0.1, 0.1))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_clip_int(dtype, rng):
    x = rng.integers(-20, 20, (4, 5)).astype(dtype)
    g = check(lambda x: graphc.clip(x, -3, 2**40), [spec((4, 5), dtype)], [(x,)],
              lambda x: np.where(x < -3, -3, x), out_dtypes=[dtype])
    assert g.output_types[0].dtype == dtype


def test_clip_errors():
    def both_none(x):
        return graphc.clip(x)

    def float_bound_for_ints(x):
        return graphc.clip(x, 0.5, 2)

    def tensor_bound(x):
        return graphc.clip(x, x)

    for fn, exc, spec_dt in [(both_none, graphc.AttrError, "float32"),
                             (float_bound_for_ints, graphc.DTypeError, "int32"),
                             (tensor_bound, graphc.AttrError, "float32")]:
        with pytest.raises(exc) as ei:
            graphc.trace(fn, spec((4,), spec_dt))
        assert_reported_at(ei.value, line_in(fn), "clip")
    with pytest.raises(graphc.DTypeError):
        graphc.trace(lambda m: graphc.clip(m, 0, 1), spec((4,), "bool"))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("beta,threshold", [(1.0, 20.0), (2.0, 1.0), (0.5, 3.0)])
def test_softplus_beta_threshold(beta, threshold, dtype, rng):
    """torch's softplus: log(1 + exp(beta x)) / beta, x itself where beta x > threshold."""
    cases = [(randn(rng, (S, 9), "float64").astype(dtype) * 4,) for S in (1, 5)]
    check(lambda x: graphc.softplus(x, beta=beta, threshold=threshold),
          [spec(("S", 9), dtype)], cases,
          lambda x: np.where(beta * x > threshold, x, np.log(1 + np.exp(beta * x)) / beta),
          out_dtypes=[dtype])


def test_softplus_bad_attrs():
    def fn(x):
        return graphc.softplus(x, beta=0)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((4,)))
    assert_reported_at(ei.value, line_in(fn), "softplus")


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_abs_sign_int(dtype, rng):
    x = rng.integers(-9, 10, (3, 7)).astype(dtype)
    check(lambda x: (graphc.abs(x), graphc.sign(x)), [spec((3, 7), dtype)], [(x,)],
          lambda x: (np.where(x < 0, -x, x), (x > 0).astype(np.int64) - (x < 0)),
          out_dtypes=[dtype, dtype])


@pytest.mark.parametrize("name", ["abs", "sign", "isnan", "isinf"])
def test_numeric_ops_reject_bool(name):
    op = getattr(graphc, name)

    def fn(x):
        return op(x)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((4,), "bool"))
    assert_reported_at(ei.value, line_in(fn), name)


def test_new_ops_eagerly(rng):
    a = randn(rng, (3, 4))
    p = positive(rng, (3, 4))
    a64, p64 = a.astype(np.float64), p.astype(np.float64)
    for got, want, dtype in [
            (graphc.pow(p, a), np.exp(a64 * np.log(p64)), np.float32),
            (graphc.sin(a), np.cos(a64 - np.pi / 2), np.float32),
            (graphc.clip(a, -0.5, 0.5), np.minimum(np.maximum(a64, -0.5), 0.5), np.float32),
            (graphc.equal(a, a), np.ones(a.shape, bool), np.bool_),
            (graphc.logical_xor(a > 0, a < 0), np.ones(a.shape, bool), np.bool_),
            (graphc.reciprocal(p), 1 / p64, np.float32)]:
        assert type(got) is np.ndarray
        assert_matches(got, want, dtype)
