"""Helpers shared by the op tests: trace a function, compile it on the reference backend,
compare with an expected value the test computes in NumPy.

Expected values are always computed in float64 from the (upcast) inputs, so one NumPy
expression checks both the float32 result (relative norm error < 1e-5) and the float64
result or the float64 oracle mode (< 1e-12). Integer and bool results must match exactly.
"""
from __future__ import annotations

import math
import sys

import warnings

import numpy as np

import graphc
from graphc.errors import LibraryFallbackWarning
from arrays import nonzero, positive, randn, rel_err  # noqa: F401 (re-exported)

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
FLOATS = ("float32", "float64")


def upcast(a):
    """float32 -> float64; other dtypes unchanged."""
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype == np.float32 else a


def assert_matches(out, expected, dtype, tol=None, magnitude=None):
    """``out`` has ``dtype``, the expected shape, and matches ``expected`` (float64)
    by relative norm error (see :func:`rel_err` for ``magnitude``)."""
    dtype = np.dtype(dtype)
    assert isinstance(out, np.ndarray), f"expected a NumPy array, got {type(out).__name__}"
    expected = np.asarray(expected)
    assert out.shape == expected.shape, f"shape {out.shape} != expected {expected.shape}"
    assert out.dtype == dtype, f"dtype {out.dtype} != expected {dtype}"
    if dtype.kind == "f":
        finite = np.isfinite(expected)
        # Infinities (a causal mask's -inf) must sit exactly where expected; the rest is
        # compared by relative norm error.
        np.testing.assert_array_equal(out[~finite], expected[~finite])
        assert np.isfinite(out[finite]).all(), "non-finite values where finite expected"
        mag = None if magnitude is None else np.broadcast_to(magnitude, expected.shape)[finite]
        err = rel_err(out[finite], expected[finite], mag)
        limit = TOL[dtype] if tol is None else tol
        assert err < limit, f"relative error {err:.3g} >= {limit:.1g} ({dtype})"
    else:
        np.testing.assert_array_equal(out, expected.astype(dtype))


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def check(fn, specs, cases, expected, *, out_dtypes=None, tol=None, oracle=True,
          magnitude=None):
    """Trace ``fn`` on ``specs`` once, then for each tuple of arrays in ``cases``:

    * the reference backend matches ``expected(*float64 inputs)`` at the precision of the
      graph's declared output dtype (``out_dtypes`` checks what is declared), both with
      the default pass pipeline and with none (``level="O0"``: the ops as traced);
    * with ``oracle``, ``float64=True`` gives float64 for every float output and matches
      the same expected value to 1e-12.

    ``expected`` returns one array or a tuple (one per output); ``magnitude``, called the
    same way, the size of the terms behind each output (see :func:`rel_err`). Returns the
    graph.
    """
    g = graphc.trace(fn, *specs)
    exes = [graphc.compile(g, backend="reference", level="O0"),
            graphc.compile(g, backend="reference")]
    exe64 = graphc.compile(g, backend="reference", float64=True) if oracle else None
    declared = [t.np_dtype for t in g.output_types]
    if out_dtypes is not None:
        assert [np.dtype(d) for d in out_dtypes] == declared
    for arrays in cases:
        wide = [upcast(a) for a in arrays]
        want = as_tuple(expected(*wide))
        mags = as_tuple(magnitude(*wide)) if magnitude else (None,) * len(want)
        for exe in exes:
            got = as_tuple(exe(*arrays))
            assert len(got) == len(want) == len(declared)
            for o, w, m, dt in zip(got, want, mags, declared):
                assert_matches(o, w, dt, tol, m)
        if oracle:
            got64 = as_tuple(exe64(*arrays))
            for o, w, m, dt in zip(got64, want, mags, declared):
                assert_matches(o, w, np.float64 if dt.kind == "f" else dt, None, m)
    return g


def check_same(fn_a, fn_b, specs, cases):
    """Two traced functions (an op and its decomposition) agree on every case, at float32
    precision for float32 graphs and to 1e-12 in the float64 oracle mode."""
    ga, gb = graphc.trace(fn_a, *specs), graphc.trace(fn_b, *specs)
    assert ga.output_types == gb.output_types
    for float64 in (False, True):
        ea = graphc.compile(ga, backend="reference", level="O0", float64=float64)
        eb = graphc.compile(gb, backend="reference", level="O0", float64=float64)
        for arrays in cases:
            a, b = as_tuple(ea(*arrays)), as_tuple(eb(*arrays))
            for x, y in zip(a, b):
                assert x.dtype == y.dtype and x.shape == y.shape
                assert_matches(x, y.astype(np.float64), x.dtype)
    return ga, gb


def concrete(shape, sizes: dict):
    """A spec shape with its symbols replaced by sizes: ("S", 8), {"S": 3} -> (3, 8)."""
    return tuple(sizes[d] if isinstance(d, str) else d for d in shape)


def next_line() -> str:
    """``file:line`` of the line after the caller's: the offending call in
    ``at = next_line()`` followed by that call. Error messages must quote it."""
    f = sys._getframe(1)
    return f"{f.f_code.co_filename}:{f.f_lineno + 1}"


def line_in(fn, offset: int = 1) -> str:
    """``file:line`` of the line ``offset`` lines below ``def fn`` (its first body line)."""
    code = fn.__code__
    return f"{code.co_filename}:{code.co_firstlineno + offset}"


def assert_reported_at(err, where: str, op: str | None = None):
    """A GraphcError whose message quotes the user's ``file:line`` (and names ``op``)."""
    assert isinstance(err, graphc.GraphcError)
    msg = str(err)
    assert where in msg, f"{where!r} not in error message:\n{msg}"
    if op is not None:
        assert f"'{op}'" in msg or f"{op}(" in msg, f"op {op} not named in:\n{msg}"


def erf64(x):
    """erf in float64, from SciPy when it is installed, else from the math module."""
    try:
        from scipy.special import erf
        return erf(np.asarray(x, np.float64))
    except ImportError:  # pragma: no cover
        return np.vectorize(math.erf, otypes=[np.float64])(x)


COMPILED = ("numba", "cupy-emu")


def check_compiled(fn, specs, cases, expected, backends=COMPILED):
    """``fn`` traced once, compiled for each backend (a LibraryFallbackWarning, i.e. no
    native lowering, fails), matches ``expected(*float64 inputs)`` on every case."""
    g = graphc.trace(fn, *specs)
    for backend in backends:
        with warnings.catch_warnings():
            warnings.simplefilter("error", LibraryFallbackWarning)
            exe = graphc.compile(g, backend=backend)
        for arrays in cases:
            got = as_tuple(exe(*arrays))
            want = as_tuple(expected(*[upcast(a) for a in arrays]))
            assert len(got) == len(want)
            for k, (o, w, t) in enumerate(zip(got, want, g.output_types)):
                try:
                    assert_matches(o, w, t.np_dtype)
                except AssertionError as e:
                    raise AssertionError(f"{backend}, output {k}, shapes "
                                         f"{[a.shape for a in arrays]}: {e}") from None
    return g

