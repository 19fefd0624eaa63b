"""Call-time checks: symbols bind per call; wrong arrays raise InputError / SymbolError
naming this file and the line of the exe(...) call."""
import inspect
import os

import numpy as np
import pytest

import graphc

HERE = os.path.basename(__file__)
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def assert_close(got, want):
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype
    err = np.linalg.norm((got - want).ravel()) / np.linalg.norm(want.ravel())
    assert err < TOL[want.dtype.type], err


def randn(rng, shape, dtype=np.float32):
    return np.asarray(rng.standard_normal(shape), dtype=dtype)


def assert_names_call(err, line):
    text = str(err.value)
    assert f"{HERE}:{line}" in text, text
    assert os.path.samefile(err.value.loc.filename, __file__)
    assert err.value.loc.lineno == line


@pytest.fixture
def attention_exe(rng):
    """q, k, v: [S, 8] -> softmax(q k^T / sqrt 8) v."""
    def attn(q, k, v):
        return graphc.softmax(graphc.scale(q @ k.T, 8 ** -0.5), axis=-1) @ v

    spec = graphc.spec(("S", 8))
    return graphc.compile(graphc.trace(attn, spec, spec, spec))


def np_attention(q, k, v):
    s = (q.astype(np.float64) @ k.T.astype(np.float64)) / np.sqrt(8)
    e = np.exp(s - s.max(-1, keepdims=True))
    return ((e / e.sum(-1, keepdims=True)) @ v).astype(q.dtype)


def test_same_graph_runs_for_several_sizes(rng, attention_exe):
    for S in (1, 3, 9, 4):
        q, k, v = (randn(rng, (S, 8)) for _ in range(3))
        out = attention_exe(q, k, v)
        assert out.shape == (S, 8)
        assert_close(out, np_attention(q, k, v))


def test_two_symbols_bind_independently(rng):
    g = graphc.trace(lambda a, b: a.T @ b, graphc.spec(("N", "S")), graphc.spec(("N", "T")))
    exe = graphc.compile(g)
    for n, s, t in ((2, 3, 4), (5, 1, 2)):
        a, b = randn(rng, (n, s)), randn(rng, (n, t))
        assert_close(exe(a, b), a.T @ b)


def test_float64_graph(rng):
    g = graphc.trace(lambda x, w: graphc.relu(x @ w) - x,
                     graphc.spec(("S", 4), "float64"), graphc.spec((4, 4), "float64"))
    x, w = randn(rng, (6, 4), np.float64), randn(rng, (4, 4), np.float64)
    assert_close(graphc.compile(g)(x, w), np.maximum(x @ w, 0) - x)


def test_symbol_bound_to_two_sizes(rng, attention_exe):
    q, k, v = randn(rng, (3, 8)), randn(rng, (5, 8)), randn(rng, (3, 8))
    with pytest.raises(graphc.SymbolError) as err:
        line = inspect.currentframe().f_lineno + 1
        attention_exe(q, k, v)
    assert isinstance(err.value, graphc.InputError)
    assert_names_call(err, line)
    assert "S" in str(err.value) and "3" in str(err.value) and "5" in str(err.value)


def test_symbol_repeated_within_one_input(rng):
    exe = graphc.compile(graphc.trace(lambda m: m @ m, graphc.spec(("S", "S"))))
    m = randn(rng, (3, 3))
    assert_close(exe(m), m @ m)
    with pytest.raises(graphc.SymbolError) as err:
        line = inspect.currentframe().f_lineno + 1
        exe(randn(rng, (3, 4)))
    assert_names_call(err, line)


def test_wrong_dtype(rng, attention_exe):
    q = randn(rng, (3, 8))
    with pytest.raises(graphc.InputError) as err:
        line = inspect.currentframe().f_lineno + 1
        attention_exe(q, q.astype(np.float64), q)
    assert_names_call(err, line)
    assert "float64" in str(err.value) and "'k'" in str(err.value)


@pytest.mark.parametrize("dtype", ["int64", "object", "uint8", ">f4"])
def test_wrong_dtype_message_reads_right(rng, attention_exe, dtype):
    q = randn(rng, (3, 8))
    with pytest.raises(graphc.InputError) as err:
        attention_exe(q, q.astype(dtype), q)
    msg = str(err.value)
    assert (f"input 1 'k' expects f32[S,8] but got an array of dtype {np.dtype(dtype)} "
            "and shape (3, 8); convert with .astype(np.float32)") in msg, msg


def test_wrong_rank(rng, attention_exe):
    q = randn(rng, (3, 8))
    with pytest.raises(graphc.InputError) as err:
        line = inspect.currentframe().f_lineno + 1
        attention_exe(q, q, q[None])
    assert_names_call(err, line)
    assert "rank" in str(err.value)


def test_wrong_fixed_dim(rng, attention_exe):
    q = randn(rng, (3, 8))
    with pytest.raises(graphc.InputError) as err:
        line = inspect.currentframe().f_lineno + 1
        attention_exe(q[:, :7], q, q)
    assert_names_call(err, line)
    assert "(3, 7)" in str(err.value)


@pytest.mark.parametrize("n", [0, 2, 4])
def test_wrong_number_of_inputs(rng, attention_exe, n):
    q = randn(rng, (3, 8))
    with pytest.raises(graphc.InputError) as err:
        line = inspect.currentframe().f_lineno + 1
        attention_exe(*([q] * n))
    assert_names_call(err, line)
    assert "expects 3" in str(err.value)


def test_list_instead_of_ndarray(rng, attention_exe):
    q = randn(rng, (3, 8))
    with pytest.raises(graphc.InputError) as err:
        line = inspect.currentframe().f_lineno + 1
        attention_exe(q, q.tolist(), q)
    assert_names_call(err, line)
    assert "list" in str(err.value)


def test_error_names_the_call_inside_a_user_helper(rng, attention_exe):
    where = {}

    def helper(*arrays):
        where["line"] = inspect.currentframe().f_lineno + 1
        return attention_exe(*arrays)

    with pytest.raises(graphc.InputError) as err:
        helper(randn(rng, (2, 8)))
    assert_names_call(err, where["line"])


@pytest.mark.parametrize("level", [None, "O0"])
def test_slice_past_the_end_at_run_time_raises(rng, level):
    """table[:S] declares S rows; an S larger than the table must fail, not return 8 rows."""
    table = randn(rng, (8, 4))
    g = graphc.trace(lambda x: graphc.constant(table)[:x.shape[0]] * x,
                     graphc.spec(("S", 4)))
    exe = graphc.compile(g, level=level)
    x = randn(rng, (8, 4))
    assert_close(exe(x), table * x)
    with pytest.raises(graphc.GraphcError) as err:
        exe(randn(rng, (9, 4)))
    assert "slice" in str(err.value)


@pytest.mark.parametrize("level", [None, "O0"])
def test_symbolic_slice_larger_than_input_at_run_time_raises(rng, level):
    exe = graphc.compile(graphc.trace(lambda x: x[-3:] * 2.0, graphc.spec(("S", 2))),
                         level=level)
    x = randn(rng, (5, 2))
    assert_close(exe(x), x[-3:] * 2)
    with pytest.raises(graphc.GraphcError):
        exe(randn(rng, (2, 2)))


@pytest.mark.parametrize("level", [None, "O0"])
def test_symbolic_slice_bounds_that_go_negative_raise(rng, level):
    """table[S-5:S-3] with S=2 must not read rows 7:9 (NumPy's from-the-end reading)."""
    table = randn(rng, (10, 2))

    def fn(x):
        S = x.shape[0]
        return graphc.constant(table)[S - 5:S - 3] * 1.0, x * 1.0

    exe = graphc.compile(graphc.trace(fn, graphc.spec(("S", 2))), level=level)
    x = randn(rng, (6, 2))
    assert_close(exe(x)[0], table[1:3])
    with pytest.raises(graphc.GraphcError):
        exe(randn(rng, (2, 2)))


def test_unknown_backend_is_a_backend_error():
    g = graphc.trace(lambda x: x * 2.0, graphc.spec((2,)))
    with pytest.raises(graphc.BackendError):
        graphc.compile(g, backend="no-such-backend")
    with pytest.raises(graphc.TraceError):
        graphc.compile(lambda x: x)


def test_float64_oracle_uses_exact_python_literals():
    # A float32 graph with literals: the oracle computes with the literals as written,
    # not with their float32 roundings.
    g = graphc.trace(lambda x: (x + 0.1) * 1e-5 + 1e-7 / (x * x + 0.3),
                     graphc.spec(("S",), "float32"))
    x = np.random.default_rng().standard_normal(8).astype(np.float32)
    x64 = x.astype(np.float64)
    want = (x64 + 0.1) * 1e-5 + 1e-7 / (x64 * x64 + 0.3)
    got = graphc.compile(g, backend="reference", float64=True)(x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-15


SLICES = {   # name: (fn, spec of x, a size that fits, sizes that do not)
    "x[:5]": (lambda x: x[:5] * 2.0, ("S", 3), 6, (2, 4, 0)),
    "x[-1]": (lambda x: x[-1] + 1.0, ("S", 3), 1, (0,)),
    "x[3]": (lambda x: x[3] + 1.0, ("S", 3), 4, (2, 3)),
    "x[-2:]": (lambda x: x[-2:] * 2.0, ("S", 6), 2, (1, 0)),
    "x[2:]": (lambda x: x[2:] * 2.0, ("S", 3), 2, (1, 0)),
    "x[:-1]": (lambda x: x[:-1] * 2.0, ("S", 3), 1, (0,)),
    "x[1:S-1] (GEMM operand)": (lambda x: x[1:x.shape[0] - 1] @ np.ones((3, 4), np.float32),
                                ("S", 3), 2, (1, 0)),
}


def _backends_first_case_quick(cases):
    """(case, backend) pairs: every case on reference and numba, the first case on cupy-emu
    in the quick suite and the others in the slow one (each cupy-emu case is a C++ compile
    of its own, ~1.5 CPU s)."""
    out = []
    for i, case in enumerate(cases):
        for backend in ("reference", "numba", "cupy-emu"):
            slow = backend == "cupy-emu" and i > 0
            out.append(pytest.param(case, backend, id=f"{case}-{backend}",
                                    marks=[pytest.mark.slow] if slow else []))
    return out


@pytest.mark.parametrize("case,backend", _backends_first_case_quick(SLICES))
def test_symbolic_slices_outside_the_input_raise_on_every_backend(rng, backend, case):
    """A slice whose bounds fall outside the input for this call's sizes is an
    InputError naming the slice, its operand's shape and the user's line that sliced, on
    every backend; compiled kernels never read past the input (the numba and cupy
    backends returned whatever memory followed it)."""
    fn, shape, ok, bad = SLICES[case]
    exe = graphc.compile(graphc.trace(fn, graphc.spec(shape)), backend=backend)
    ref = graphc.compile(graphc.trace(fn, graphc.spec(shape)), backend="reference",
                         float64=True)
    for S in bad:
        x = randn(rng, (S,) + shape[1:])
        with pytest.raises(graphc.InputError, match=r"slice\(\): elements .* do not fit") as err:
            exe(x)
        assert os.path.samefile(err.value.loc.filename, __file__)
        assert fn.__code__.co_firstlineno == err.value.loc.lineno
        assert "shapes f32[S," in str(err.value)
    for S in (ok, ok + 3):   # the executable still works afterwards (at the edge, too:
        x = randn(rng, (S,) + shape[1:])       # x[2:] of 2 rows is empty, not an error)
        got, want = exe(x), ref(x).astype(np.float32)
        if want.size:
            assert_close(got, want)
        assert got.shape == want.shape


VALID_SLICES = {   # name: (fn, spec of x, sizes): slices NumPy and the graph agree on
    "x[0:10:2], stop past the end": (lambda x: x[0:10:2] * 1.0, ("S",), (9, 10, 12)),
    "x[5:3], empty": (lambda x: x[5:3] * 1.0, ("S", 3), (2, 5, 8)),
    "x[3:3], empty": (lambda x: x[3:3] * 1.0, ("S", 3), (2, 3, 4)),
    "x[2:S], empty at S=2": (lambda x: x[2:] * 1.0, ("S", 3), (2, 3)),
}


@pytest.mark.parametrize("case,backend", _backends_first_case_quick(VALID_SLICES))
def test_symbolic_slices_that_fit_run_on_every_backend(rng, backend, case):
    """The size checks refuse only what the graph cannot compute: a strided slice whose
    stop lies past the end but whose last element is inside, and empty slices whose
    start is past their stop or past the end, still run."""
    fn, shape, sizes = VALID_SLICES[case]
    exe = graphc.compile(graphc.trace(fn, graphc.spec(shape)), backend=backend)
    for S in sizes:
        x = randn(rng, (S,) + shape[1:])
        want = fn(x)
        got = exe(x)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
