"""A user registers a new op, traces it, runs it, and removes it again. Also: every
registered op is exercised by this suite."""
import pathlib
import re

import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.ir import TensorType
from graphc.lower import loopir as L
from graphc.ops import unregister_op
from opcheck import (assert_matches, assert_reported_at, check, check_same, line_in,
                     next_line, randn, upcast)

COMPILED = ("numba", "cupy-emu")


@pytest.fixture
def temp_op_names():
    """Names registered during a test; unregistered afterwards even if the test fails."""
    names = []
    yield names
    for n in names:
        unregister_op(n)
        assert n not in graphc.all_ops()


def test_register_elementwise_op(temp_op_names, rng):
    temp_op_names.append("my_op_xyz")

    @graphc.register_op("my_op_xyz", kind="elementwise",
                        lower=lambda node, a, b: L.Bin("+", L.Bin("*", a, b), a))
    def my_op(a, b):
        """a * b + a"""
        return a * b + a

    assert graphc.all_ops()["my_op_xyz"] is my_op
    assert graphc.get_op("my_op_xyz").kind == "elementwise"
    assert my_op.inputs == ("a", "b") and my_op.doc == "a * b + a"
    cases = [(randn(rng, (n, 4)), randn(rng, (4,))) for n in (1, 3)]
    g = check(lambda x, y: my_op(x, y), [spec(("S", 4)), spec((4,))], cases,
              lambda x, y: x * (y + 1))
    assert g.op_counts()["my_op_xyz"] == 1
    assert "my_op_xyz" in str(g)
    # float64 graphs, and an eager call on plain arrays.
    a, b = randn(rng, (2, 3), "float64"), randn(rng, (2, 3), "float64")
    check(lambda x, y: my_op(x, y), [spec((2, 3), "float64")] * 2, [(a, b)],
          lambda x, y: x * (y + 1))
    out = my_op(a, b)
    assert type(out) is np.ndarray
    assert_matches(out, a * (b + 1), np.float64)
    # The one declaration runs on the compiled backends too, fused with what is around it.
    g = graphc.trace(lambda x, y: graphc.relu(my_op(x, y)) * 2.0, spec(("S", 4)), spec((4,)))
    x, y = randn(rng, (5, 4)), randn(rng, (4,))
    for backend in COMPILED:
        assert_matches(graphc.compile(g, backend=backend)(x, y),
                       2 * np.maximum(upcast(x) * (upcast(y) + 1), 0), np.float32)


def test_registered_op_with_attrs_and_dtypes(temp_op_names, rng):
    temp_op_names.append("my_leaky_xyz")

    def leaky_lower(node, x):
        slope = L.Const(node.attrs["slope"], node.type.dtype)
        return L.Select(L.Bin(">", x, L.Const(0.0, node.type.dtype)), x, L.Bin("*", x, slope))

    @graphc.register_op("my_leaky_xyz", kind="elementwise", dtypes="float", lower=leaky_lower)
    def leaky(x, *, slope=0.01):
        return np.where(x > 0, x, x * np.asarray(slope, x.dtype))

    x = randn(rng, (3, 5))
    def want(x):
        return (np.fmax(x, 0) + 0.01 * np.fmin(x, 0), np.fmax(x, 0) + 0.5 * np.fmin(x, 0),
                np.fmax(x, 0) + 0.25 * np.fmin(x, 0))
    g = check(lambda x: (leaky(x), leaky(x, slope=0.5), leaky(x, 0.25)), [spec(("S", 5))],
              [(x,)], want)
    for backend in COMPILED:
        for got, exp in zip(graphc.compile(g, backend=backend)(x), want(upcast(x))):
            assert_matches(got, exp, np.float32)

    def bad_dtype(x):
        return leaky(x)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(bad_dtype, spec((3,), "int32"))
    assert_reported_at(ei.value, line_in(bad_dtype), "my_leaky_xyz")

    def bad_attr(x):
        return leaky(x, alpha=2.0)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(bad_attr, spec((3,)))
    assert_reported_at(ei.value, line_in(bad_attr), "my_leaky_xyz")


def test_registered_composite_op_with_infer_and_decompose(temp_op_names, rng):
    """A reduction with its own type inference and a decomposition into built-ins."""
    temp_op_names.append("my_logsumexp_xyz")

    def infer(types, attrs):
        (x,) = types
        if x.dtype not in ("float32", "float64"):
            raise graphc.DTypeError(f"my_logsumexp_xyz: float input expected, got {x.dtype}")
        if x.rank < 1:
            raise graphc.ShapeError("my_logsumexp_xyz: rank >= 1 expected")
        return TensorType(x.shape[:-1], x.dtype)

    def decompose(x):
        m = graphc.max(x, axis=-1, keepdims=True)
        s = graphc.sum(graphc.exp(x - m), axis=-1)
        return graphc.log(s) + graphc.reshape(m, shape=m.shape[:-1])

    @graphc.register_op("my_logsumexp_xyz", kind="reduction", infer=infer, decompose=decompose)
    def lse(x):
        m = np.max(x, axis=-1, keepdims=True)
        return (np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)) + m)[..., 0]

    cases = [(randn(rng, (n, 6), scale=4),) for n in (1, 4)]
    check(lambda x: lse(x), [spec(("S", 6))], cases,
          lambda x: np.log(np.exp(x).sum(-1)))
    check_same(lambda x: lse(x), lambda x: lse.decompose(x), [spec(("S", 6))], cases)

    def bad_rank(x):
        return lse(x)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(bad_rank, spec(()))
    assert_reported_at(ei.value, line_in(bad_rank), "my_logsumexp_xyz")


def test_unregistered_op_is_gone(temp_op_names, rng):
    @graphc.register_op("my_tmp_xyz", kind="elementwise", lower=lambda n, x: L.Bin("+", x, x))
    def tmp(x):
        return x + x

    g = graphc.trace(lambda x: tmp(x), spec((3,)))
    exe = graphc.compile(g, backend="reference")
    x = randn(rng, (3,))
    assert_matches(exe(x), 2.0 * x, np.float32)
    unregister_op("my_tmp_xyz")
    assert "my_tmp_xyz" not in graphc.all_ops()
    with pytest.raises(graphc.UnknownOpError):
        graphc.get_op("my_tmp_xyz")
    with pytest.raises(graphc.UnknownOpError) as ei:
        exe(x)
    assert "my_tmp_xyz" in str(ei.value)
    unregister_op("my_tmp_xyz")  # removing twice is harmless


def test_unknown_op_names_the_line():
    with pytest.raises(graphc.UnknownOpError) as ei:
        at = next_line()
        graphc.get_op("no_such_op_xyz")
    assert_reported_at(ei.value, at, "no_such_op_xyz")


def test_register_name_clash_keeps_builtin():
    before = graphc.get_op("add")
    with pytest.raises(graphc.GraphcError):
        @graphc.register_op("add", kind="elementwise", lower=lambda n, a, b: L.Bin("-", a, b))
        def add(a, b):
            return a - b
    assert graphc.get_op("add") is before
    assert graphc.add(np.ones(2), np.ones(2)).tolist() == [2.0, 2.0]


def test_register_bad_declarations(temp_op_names):
    temp_op_names.extend(["my_bad_kind_xyz", "my_no_infer_xyz"])
    with pytest.raises(graphc.GraphcError):
        @graphc.register_op("my_bad_kind_xyz", kind="pointwise")
        def f(x):
            return x
    with pytest.raises(graphc.GraphcError):
        @graphc.register_op("my_no_infer_xyz", kind="reduction")
        def g(x):
            return x
    assert "my_bad_kind_xyz" not in graphc.all_ops()
    assert "my_no_infer_xyz" not in graphc.all_ops()


def test_op_no_backend_can_lower_is_refused_when_registered(temp_op_names):
    """An elementwise, movement or reduction op needs a loop-IR lowering (or a
    decomposition): without one, registering it fails at the user's line, before any
    compile; a lowering that uses a function the loop IR lacks fails the same way."""
    temp_op_names.extend(["my_unlowered_xyz", "my_bad_fn_xyz", "my_wrong_form_xyz",
                          "my_opaque_xyz"])
    for kind in ("elementwise", "movement", "reduction"):
        with pytest.raises(graphc.RegistrationError) as ei:
            at = next_line()
            @graphc.register_op("my_unlowered_xyz", kind=kind, infer=lambda t, a: t[0])
            def f(x):
                return x
        assert "lower" in str(ei.value)
        assert_reported_at(ei.value, at, "my_unlowered_xyz")
        assert "my_unlowered_xyz" not in graphc.all_ops()
    with pytest.raises(graphc.RegistrationError, match="softplusish"):
        @graphc.register_op("my_bad_fn_xyz", kind="elementwise",
                            lower=lambda n, x: L.Call("softplusish", (x,)))
        def g(x):
            return x
    with pytest.raises(graphc.RegistrationError, match="lower_row"):
        @graphc.register_op("my_wrong_form_xyz", kind="reduction", infer=lambda t, a: t[0],
                            lower=lambda n, x: x)
        def h(x):
            return x
    assert not {"my_bad_fn_xyz", "my_wrong_form_xyz"} & set(graphc.all_ops())

    # An opaque op runs its NumPy reference on every backend (with a warning on the
    # compiled ones), so it needs no lowering.
    @graphc.register_op("my_opaque_xyz", kind="opaque", infer=lambda t, a: t[0])
    def op(x):
        return x * 3
    assert graphc.get_op("my_opaque_xyz").compiles


def test_reference_returning_wrong_dtype_is_reported(temp_op_names, rng):
    temp_op_names.append("my_sloppy_xyz")

    @graphc.register_op("my_sloppy_xyz", kind="elementwise", lower=lambda n, x: x)
    def sloppy(x):
        return x.astype(np.float64)  # declared float32 by the default inference

    def fn(x):
        return sloppy(x)
    exe = graphc.compile(graphc.trace(fn, spec((3,))))
    with pytest.raises(graphc.BackendError) as ei:
        exe(randn(rng, (3,)))
    assert_reported_at(ei.value, line_in(fn), "my_sloppy_xyz")


def test_every_registered_op_is_tested_here():
    """Each built-in op name appears as graphc.<name>, (graphc.)ops.<name>,
    get_op("<name>") or a "<name>" table key in this folder's tests."""
    text = "\n".join(p.read_text() for p in pathlib.Path(__file__).parent.glob("test_*.py"))
    missing = []
    for name in graphc.all_ops():
        pat = (rf"graphc\.(ops\.)?{name}\b|\bops\.{name}\b|get_op\(\"{name}\"\)|"
               rf"\"{name}\":|\(\"{name}\",")
        if not re.search(pat, text):
            missing.append(name)
    assert not missing, f"ops without a test in tests/ops: {missing}"


def test_every_built_in_op_has_a_description():
    # `graphc ops` prints the first line of each op's doc; none may be blank.
    blank = sorted(name for name, op in graphc.all_ops().items()
                   if not (op.doc or "").strip() or not op.doc.splitlines()[0].strip())
    assert not blank, f"ops with no description: {blank}"
