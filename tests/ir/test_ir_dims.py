"""Symbolic dim arithmetic (graphc.ir.dims)."""
import pytest
from hypothesis import given, settings, strategies as st

from graphc.ir.dims import Sym, as_dim, evaluate, exact_div, prod
from graphc.ir.types import TensorType

S, T = Sym.of("S"), Sym.of("T")


def test_plain_symbol():
    assert str(S) == "S" and repr(S) == "S"
    assert S.symbols == {"S"}
    assert S == Sym.of("S") and S != T
    assert S != 1 and S != 0
    assert hash(S) == hash(Sym.of("S"))


@pytest.mark.parametrize("expr,text", [
    (lambda: S + 1, "S+1"),
    (lambda: 1 + S, "S+1"),
    (lambda: S - 1, "S-1"),
    (lambda: 3 - S, "-S+3"),
    (lambda: -S, "-S"),
    (lambda: 2 * S, "2*S"),
    (lambda: S * 2 - 4, "2*S-4"),
    (lambda: S * T, "S*T"),
    (lambda: T * S + S, "S*T+S"),
    (lambda: S * S, "S*S"),
    (lambda: (S + 1) * (S - 1), "S*S-1"),
    (lambda: S + T - 2 * T, "S-T"),
    (lambda: 12 * S // 4, "3*S"),
    (lambda: S * T // S, "T"),
])
def test_str_forms(expr, text):
    assert str(expr()) == text


def test_results_that_are_constants_collapse_to_int():
    for value, want in ((S - S, 0), (S * 0, 0), ((S + 2) - S, 2), (2 * S // S, 2),
                        (S + T - T - S + 5, 5)):
        assert type(value) is int and value == want


def test_structural_equality():
    assert S + T == T + S
    assert 2 * (S + 1) == 2 * S + 2
    assert S * T == T * S
    assert S + 1 != S + 2


def test_exact_div():
    assert exact_div(12, 4) == 3
    assert exact_div(12, 5) is None
    assert exact_div(12, 0) is None
    assert exact_div(12 * S, 12) == S
    assert exact_div(12 * S, 4 * S) == 3
    assert exact_div(6 * S * T + 3 * S, 3 * S) == 2 * T + 1
    assert exact_div(0, S) == 0
    assert exact_div(S, 2) is None           # not exact for odd S
    assert exact_div(12, S) is None
    assert exact_div(S * T, S * S) is None
    assert exact_div(2 * S + 1, 2) is None


def test_exact_div_by_a_sum():
    assert exact_div(S - 1, S - 1) == 1
    assert exact_div(S + T, T + S) == 1
    assert exact_div(S + 1, S - 1) is None


def test_floordiv_raises_when_not_exact():
    with pytest.raises(ValueError):
        S // 2
    with pytest.raises(ValueError):
        12 // S


def test_evaluate():
    b = {"S": 5, "T": 3}
    assert evaluate(7, b) == 7
    assert evaluate(S, b) == 5
    assert evaluate(S * T - 2 * S + 1, b) == 15 - 10 + 1
    assert evaluate((S + 1) * (T - 1), b) == 12
    with pytest.raises(KeyError):
        evaluate(S + T, {"S": 1})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 2), st.integers(0, 2)),
                min_size=1, max_size=4),
       st.integers(1, 9), st.integers(1, 9), st.integers(-5, 5))
def test_arithmetic_agrees_with_evaluation(terms, s, t, k):
    """Build c * S^i * T^j sums symbolically and numerically; they must agree."""
    b = {"S": s, "T": t}
    sym, num = 0, 0
    for c, i, j in terms:
        m = c
        for _ in range(i):
            m = m * S
        for _ in range(j):
            m = m * T
        sym = sym + m
        num += c * s ** i * t ** j
    assert evaluate(sym, b) == num
    assert evaluate(sym * k - sym, b) == num * k - num
    assert evaluate(prod([sym, S, 2]), b) == num * s * 2
    q = exact_div(sym * S * 3, 3 * S)
    assert q == sym or (q == 0 and sym == 0)


def test_as_dim_and_types():
    assert as_dim("S") == S
    assert as_dim(" 12 ") == 12
    assert as_dim(4) == 4
    with pytest.raises(TypeError):
        as_dim(True)
    with pytest.raises(TypeError):
        as_dim(2.5)
    with pytest.raises(ValueError):
        Sym.of("2S")
    t = TensorType(("S", 4, S * T), "float32")
    assert str(t) == "f32[S,4,S*T]"
    assert t.symbols == {"S", "T"} and not t.is_static
    assert t.concrete_shape({"S": 2, "T": 3}) == (2, 4, 6)
    assert t.nbytes({"S": 2, "T": 3}) == 2 * 4 * 6 * 4


def test_symbol_has_no_fixed_int_value():
    import graphc
    with pytest.raises(TypeError):
        range(S)
    with pytest.raises(graphc.TraceError):
        int(S + 1)


@pytest.mark.parametrize("expr", [lambda: S * 1.5, lambda: 0.5 * S, lambda: S + 0.5,
                                  lambda: S - 2.0, lambda: 3.0 - S, lambda: S * True])
def test_non_int_operands_are_rejected_not_truncated(expr):
    import graphc
    with pytest.raises(graphc.TraceError) as err:
        expr()
    assert isinstance(err.value, TypeError)


def test_numpy_ints_combine_with_symbols():
    import numpy as np
    assert S * np.int64(3) - np.int32(1) == 3 * S - 1
