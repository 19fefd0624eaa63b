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
                                  "relu", "silu", "gelu"])
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
