"""Trace-time errors are graphc errors that name the user's file and line."""
import inspect
import os

import numpy as np
import pytest

import graphc

HERE = os.path.basename(__file__)


def assert_names_line(err, line):
    """The message quotes this file and the line; the error carries the same location."""
    text = str(err.value)
    assert f"{HERE}:{line}" in text, text
    assert err.value.loc is not None
    assert os.path.samefile(err.value.loc.filename, __file__)
    assert err.value.loc.lineno == line


def trace_expecting(exc, fn, *specs):
    with pytest.raises(exc) as err:
        graphc.trace(fn, *specs)
    assert isinstance(err.value, graphc.GraphcError)
    return err


def test_matmul_shape_mismatch():
    where = {}

    def fn(a, b):
        where["line"] = inspect.currentframe().f_lineno + 1
        return a @ b

    err = trace_expecting(graphc.ShapeError, fn, graphc.spec(("S", 4)), graphc.spec((5, 3)))
    assert_names_line(err, where["line"])
    assert "matmul" in str(err.value) and "f32[S,4]" in str(err.value)


def test_matmul_symbolic_inner_dim_mismatch():
    where = {}

    def fn(a, b):
        where["line"] = inspect.currentframe().f_lineno + 1
        return a.T @ b

    err = trace_expecting(graphc.ShapeError, fn, graphc.spec(("S", 4)), graphc.spec(("T", 4)))
    assert_names_line(err, where["line"])


def test_add_broadcast_mismatch():
    where = {}

    def fn(a, b):
        y = a * 2.0
        where["line"] = inspect.currentframe().f_lineno + 1
        return y + b

    err = trace_expecting(graphc.ShapeError, fn, graphc.spec(("S", 4)), graphc.spec((3,)))
    assert_names_line(err, where["line"])
    assert "add" in str(err.value)


def test_symbols_do_not_broadcast_against_each_other():
    where = {}

    def fn(a, b):
        where["line"] = inspect.currentframe().f_lineno + 1
        return a + b

    err = trace_expecting(graphc.ShapeError, fn, graphc.spec(("S", 4)), graphc.spec(("T", 4)))
    assert_names_line(err, where["line"])


def test_dtype_mismatch_with_float64_array():
    w = np.random.default_rng(0).standard_normal(4)  # float64
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return x + w

    err = trace_expecting(graphc.DTypeError, fn, graphc.spec(("S", 4), "float32"))
    assert_names_line(err, where["line"])
    assert "float64" in str(err.value) and "float32" in str(err.value)


def test_unknown_op_raises_unknown_op_error():
    with pytest.raises(graphc.UnknownOpError) as err:
        graphc.get_op("nope")
    assert "'nope'" in str(err.value) and "softmax" in str(err.value)


def test_unknown_op_names_the_line():
    with pytest.raises(graphc.UnknownOpError) as err:
        line = inspect.currentframe().f_lineno + 1
        graphc.get_op("nope")
    assert_names_line(err, line)


@pytest.mark.parametrize("shape", [(5, -1), (7,), (-1, -1), (2, -3, 6)])
def test_bad_reshape(shape):
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return x.reshape(shape)

    err = trace_expecting(graphc.ShapeError, fn, graphc.spec(("S", 12)))
    assert_names_line(err, where["line"])
    assert "reshape" in str(err.value)


def test_reshape_static_element_count_mismatch():
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return x.reshape(5, 2)

    err = trace_expecting(graphc.ShapeError, fn, graphc.spec((3, 4)))
    assert_names_line(err, where["line"])


def test_if_on_tensor_is_a_trace_error():
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        if x:
            return x
        return -x

    err = trace_expecting(graphc.TraceError, fn, graphc.spec((1,)))
    assert_names_line(err, where["line"])
    assert "control flow" in str(err.value)


def test_comparison_result_in_if_is_a_trace_error():
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return x if (x > 0.0) else -x

    err = trace_expecting(graphc.TraceError, fn, graphc.spec(("S",)))
    assert_names_line(err, where["line"])


def test_iterating_a_tensor_is_a_trace_error():
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return [r for r in x]

    err = trace_expecting(graphc.TraceError, fn, graphc.spec((2, 3)))
    assert_names_line(err, where["line"])


def test_len_of_symbolic_dim_is_a_trace_error():
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return x * float(len(x))

    err = trace_expecting(graphc.TraceError, fn, graphc.spec(("S", 3)))
    assert_names_line(err, where["line"])


def test_python_loop_over_symbolic_size_is_a_trace_error():
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return [x[i] for i in range(x.shape[0])]

    err = trace_expecting(graphc.TraceError, fn, graphc.spec(("S", 3)))
    assert_names_line(err, where["line"])
    assert isinstance(err.value, TypeError)  # what range() / __index__ callers expect


def test_numpy_table_sliced_by_symbol_is_a_trace_error():
    table = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return table[:x.shape[0]] + x

    err = trace_expecting(graphc.TraceError, fn, graphc.spec(("S", 3)))
    assert_names_line(err, where["line"])
    assert "graphc.constant" in str(err.value)


def test_symbol_no_input_declares_is_a_trace_error():
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return x * 2.0, graphc.causal_mask("T", "T")

    err = trace_expecting(graphc.TraceError, fn, graphc.spec(("S", 4)))
    assert_names_line(err, where["line"])
    assert "T" in err.value.message


def test_index_out_of_bounds_and_bad_steps():
    where = {}

    def oob(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return x[:, 4]

    assert_names_line(trace_expecting(graphc.TraceError, oob, graphc.spec(("S", 4))),
                      where["line"])

    def reverse(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return x[::-1]

    assert_names_line(trace_expecting(graphc.GraphcError, reverse, graphc.spec((4,))),
                      where["line"])

    def too_many(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return x[0, 0, 0]

    assert_names_line(trace_expecting(graphc.TraceError, too_many, graphc.spec((2, 2))),
                      where["line"])


def test_bad_transpose_axes():
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return x.transpose(0, 0)

    err = trace_expecting(graphc.AttrError, fn, graphc.spec((2, 3)))
    assert_names_line(err, where["line"])


def test_error_inside_helper_names_the_helper_line():
    """The location is the innermost user frame, not the traced function's call site."""
    where = {}

    def helper(a, b):
        where["line"] = inspect.currentframe().f_lineno + 1
        return graphc.softmax(a @ b)

    err = trace_expecting(graphc.ShapeError, lambda a, b: helper(a, b),
                          graphc.spec((2, 3)), graphc.spec((2, 3)))
    assert_names_line(err, where["line"])


def test_bad_spec_and_bad_trace_arguments():
    with pytest.raises(graphc.TraceError) as err:
        line = inspect.currentframe().f_lineno + 1
        graphc.spec(("S", 4), "complex64")
    assert_names_line(err, line)
    with pytest.raises(graphc.TraceError) as err:
        line = inspect.currentframe().f_lineno + 1
        graphc.spec(("2*S",))
    assert_names_line(err, line)
    with pytest.raises(graphc.TraceError) as err:
        line = inspect.currentframe().f_lineno + 1
        graphc.trace(lambda x: x, np.zeros(3, np.float32))
    assert_names_line(err, line)
    with pytest.raises(graphc.TraceError) as err:
        line = inspect.currentframe().f_lineno + 1
        graphc.trace(lambda x: 3.0, graphc.spec((3,)))
    assert_names_line(err, line)


def test_spec_count_that_does_not_fit_the_function():
    with pytest.raises(graphc.TraceError) as err:
        line = inspect.currentframe().f_lineno + 1
        graphc.trace(lambda x: x, graphc.spec((2,)), graphc.spec((2,)))
    assert_names_line(err, line)
    with pytest.raises(graphc.TraceError) as err:
        line = inspect.currentframe().f_lineno + 1
        graphc.trace(lambda x, *, k: x * k, graphc.spec((2,)))
    assert_names_line(err, line)
    assert "'k'" in str(err.value)


def test_tensors_from_two_traces_do_not_mix():
    leaked = {}
    graphc.trace(lambda x: leaked.setdefault("t", x * 1.0), graphc.spec((2,)))
    where = {}

    def fn(y):
        where["line"] = inspect.currentframe().f_lineno + 1
        return y + leaked["t"]

    err = trace_expecting(graphc.TraceError, fn, graphc.spec((2,)))
    assert_names_line(err, where["line"])


def test_float_arithmetic_on_a_symbolic_dim():
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        half = x.shape[0] * 0.5
        return x.reshape(half, -1)

    err = trace_expecting(graphc.TraceError, fn, graphc.spec(("S", 4)))
    assert_names_line(err, where["line"])


def test_array_index_inside_a_tuple_is_a_trace_error():
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return x[:, np.array([0, 2])]

    err = trace_expecting(graphc.TraceError, fn, graphc.spec(("S", 3)))
    assert_names_line(err, where["line"])


@pytest.mark.parametrize("bad", ["2*S", "S+1", "S*S", "-1"])
def test_spec_dims_must_be_plain_symbols_or_sizes(bad):
    from graphc.ir.dims import Sym
    S = Sym.of("S")
    dim = {"2*S": 2 * S, "S+1": S + 1, "S*S": S * S, "-1": -1}[bad]
    with pytest.raises(graphc.TraceError) as err:
        line = inspect.currentframe().f_lineno + 1
        graphc.spec((dim, 4))
    assert_names_line(err, line)
    assert str(graphc.spec((S, 0, "T")).type) == "f32[S,0,T]"


def test_if_on_a_symbolic_size_is_a_trace_error():
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        if x.shape[0] > 10:
            return x * 2.0
        return x

    err = trace_expecting(graphc.TraceError, fn, graphc.spec(("S", 3)))
    assert_names_line(err, where["line"])
    text = str(err.value)
    assert "S > 10" in text and "graphc.where" in text and "fixed size" in text, text


def test_comparisons_that_hold_for_every_size_are_answered():
    seen = {}

    def fn(x):
        S = x.shape[0]
        seen["answers"] = (S + 1 > S, S >= 0, 2 * S >= S, S < S + 1, S + 1 <= S)
        return x

    graphc.trace(fn, graphc.spec(("S", 3)))
    assert seen["answers"] == (True, True, True, True, False)


def test_min_of_symbolic_sizes_is_a_trace_error():
    def fn(x, y):
        return x[:min(x.shape[0], y.shape[0])]

    err = trace_expecting(graphc.TraceError, fn, graphc.spec(("S", 3)), graphc.spec(("T", 3)))
    assert "S" in str(err.value) and "T" in str(err.value)


@pytest.mark.parametrize("ufunc,name", [(np.tanh, "tanh"), (np.exp, "exp"),
                                        (np.sqrt, "sqrt")])
def test_numpy_ufunc_on_a_traced_tensor_says_what_to_write(ufunc, name):
    where = {}

    def fn(x):
        where["line"] = inspect.currentframe().f_lineno + 1
        return ufunc(x)

    err = trace_expecting(graphc.TraceError, fn, graphc.spec(("S", 3)))
    assert_names_line(err, where["line"])
    assert f"graphc.{name}" in str(err.value), str(err.value)
