"""topk, causal_mask, arange, triu and tril on the reference backend against NumPy /
Python written here; arange, triu and tril also on the compiled backends (numba,
cupy-emu)."""

import numpy as np
import pytest

import graphc
from graphc import spec
from opcheck import (assert_matches, assert_reported_at, check, check_compiled, concrete,
                     FLOATS, line_in, next_line, randn)


def _topk(x, k, axis):
    """(values, indices) by sorting each lane on (-value, index) in plain Python."""
    moved = np.moveaxis(x, axis, -1)
    lanes = moved.reshape(-1, moved.shape[-1])
    idx = np.array([sorted(range(len(lane)), key=lambda i: (-lane[i], i))[:k]
                    for lane in lanes], dtype=np.int64).reshape(moved.shape[:-1] + (k,))
    vals = np.array([[lane[i] for i in row] for lane, row in
                     zip(lanes, idx.reshape(-1, k))]).reshape(idx.shape)
    return np.moveaxis(vals, -1, axis), np.moveaxis(idx, -1, axis)


TOPK = [((8,), 3, -1), ((8,), 8, 0), ((3, 8), 1, -1), ((3, 8), 2, 0), ((4, 5, 6), 3, 1),
        ((4, 5, 6), 4, -1), (("S", 8), 2, -1), (("S", 8), 1, 0), ((2, "S"), 1, -1)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,k,axis", TOPK, ids=str)
def test_topk(shape, k, axis, dtype, rng):
    cases = [(randn(rng, concrete(shape, {"S": n}), dtype),) for n in (2, 5)]
    check(lambda x: graphc.topk(x, k, axis=axis), [spec(shape, dtype)], cases,
          lambda x: _topk(x, k, axis), out_dtypes=[dtype, "int64"])


@pytest.mark.parametrize("dtype", FLOATS)
def test_topk_ties_go_to_lower_index(dtype, rng):
    x = np.array([[1, 3, 3, 2, 3], [5, 5, 5, 5, 5], [0, -1, 0, -1, 7]], dtype)
    vals, idx = graphc.topk(x, 3)
    np.testing.assert_array_equal(idx, [[1, 2, 4], [0, 1, 2], [4, 0, 2]])
    np.testing.assert_array_equal(vals, [[3, 3, 3], [5, 5, 5], [7, 0, 0]])
    # Many ties at random, along a non-last axis, traced.
    y = rng.integers(0, 3, (9, 4)).astype(dtype)
    check(lambda x: graphc.topk(x, 5, axis=0), [spec(("S", 4), dtype)], [(y,)],
          lambda x: _topk(x, 5, 0))


def test_topk_eager_returns_numpy_pair(rng):
    x = randn(rng, (3, 7))
    out = graphc.topk(x, 2)
    assert isinstance(out, tuple) and len(out) == 2
    vals, idx = out
    assert type(vals) is np.ndarray and type(idx) is np.ndarray
    want_v, want_i = _topk(x.astype(np.float64), 2, -1)
    assert_matches(vals, want_v, np.float32)
    assert_matches(idx, want_i, np.int64)
    # The indices pick the values out of x.
    np.testing.assert_array_equal(np.take_along_axis(x, idx, axis=-1), vals)


def test_topk_numpy_int_k(rng):
    x = randn(rng, (2, 6))
    vals, idx = graphc.topk(x, np.int64(3))
    assert_matches(idx, _topk(x, 3, -1)[1], np.int64)


def test_topk_single_node_outputs(rng):
    x = randn(rng, (4, 6))
    check(lambda x: (graphc.ops.topk(x, k=2, output="values"),
                     graphc.ops.topk(x, k=2, output="indices")),
          [spec((4, 6))], [(x,)], lambda x: _topk(x, 2, -1))


@pytest.mark.parametrize("k", [0, -1, 9, 2.0, True])
def test_topk_bad_k(k):
    def fn(x):
        return graphc.ops.topk(x, k=k)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3, 8)))
    assert_reported_at(ei.value, line_in(fn), "topk")


def test_topk_bad_axis_and_output():
    def fn(x):
        return graphc.ops.topk(x, k=1, axis=2)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3, 8)))
    assert_reported_at(ei.value, line_in(fn), "topk")

    def fn2(x):
        return graphc.ops.topk(x, k=1, output="both")
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn2, spec((3, 8)))
    assert_reported_at(ei.value, line_in(fn2), "topk")


def test_topk_rejects_ints(rng):
    with pytest.raises(graphc.DTypeError) as ei:
        at = next_line()
        graphc.topk(np.arange(5), 2)
    assert_reported_at(ei.value, at, "topk")


def test_topk_k_larger_than_symbolic_dim_fails_at_call_time(rng):
    def fn(x):
        return graphc.topk(x, 4, axis=0)[1]
    exe = graphc.compile(graphc.trace(fn, spec(("S", 3))))
    assert exe(randn(rng, (4, 3))).shape == (4, 3)
    with pytest.raises(graphc.GraphcError) as ei:
        exe(randn(rng, (3, 3)))
    assert_reported_at(ei.value, line_in(fn), "topk")


# -- causal_mask ------------------------------------------------------------------------

def _mask(rows, cols):
    """0 where query i (the last `rows` of `cols` positions) may see key j, else -inf."""
    out = np.zeros((rows, cols))
    for i in range(rows):
        pos = cols - rows + i
        for j in range(cols):
            if j > pos:
                out[i, j] = -np.inf
    return out


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("rows,cols", [(1, 1), (4, 4), (3, 5), (1, 6), (2, 7), (0, 3)])
def test_causal_mask_static(rows, cols, dtype):
    g = check(lambda: graphc.causal_mask(rows=rows, cols=cols, dtype=dtype), [], [()],
              lambda: _mask(rows, cols), out_dtypes=[dtype])
    assert g.output_types[0].shape == (rows, cols)


def test_causal_mask_rows_less_than_cols_pattern():
    m = graphc.causal_mask(rows=2, cols=4)
    assert m.dtype == np.float32 and m.shape == (2, 4)
    # Two new queries at positions 2 and 3 of 4: the first sees keys 0..2, the second all.
    np.testing.assert_array_equal(m, [[0, 0, 0, -np.inf], [0, 0, 0, 0]])
    assert (graphc.causal_mask(rows=3, cols=3) == np.triu(np.full((3, 3), -np.inf), 1)).all()


@pytest.mark.parametrize("dtype", FLOATS)
def test_causal_mask_symbolic(dtype, rng):
    """Decode with a cache: S new queries against T keys, sizes known at call time."""
    def fn(q, k):
        return graphc.causal_mask(rows=q.shape[0], cols=k.shape[0], dtype=dtype)
    cases = [(randn(rng, (s, 4), dtype), randn(rng, (t, 4), dtype))
             for s, t in [(1, 1), (1, 5), (3, 5), (4, 4)]]
    check(fn, [spec(("S", 4), dtype), spec(("T", 4), dtype)], cases,
          lambda q, k: _mask(len(q), len(k)), out_dtypes=[dtype])


@pytest.mark.parametrize("dtype", FLOATS)
def test_causal_mask_in_attention(dtype, rng):
    def fn(s):
        return graphc.softmax(s + graphc.causal_mask(rows=s.shape[0], cols=s.shape[0],
                                                      dtype=dtype), axis=-1)

    def want(s):
        out = np.zeros_like(s)
        for i in range(len(s)):
            e = np.exp(s[i, :i + 1] - s[i, :i + 1].max())
            out[i, :i + 1] = e / e.sum()
        return out
    cases = [(randn(rng, (n, n), dtype),) for n in (1, 5)]
    check(fn, [spec(("S", "S"), dtype)], cases, want, out_dtypes=[dtype])


def test_causal_mask_eager_default_dtype():
    m = graphc.causal_mask(rows=3, cols=5)
    assert type(m) is np.ndarray
    assert_matches(m, _mask(3, 5), np.float32)
    assert_matches(graphc.causal_mask(rows=3, cols=5, dtype=np.float64), _mask(3, 5), np.float64)


def test_causal_mask_more_rows_than_cols():
    def fn():
        return graphc.causal_mask(rows=5, cols=3)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn)
    assert_reported_at(ei.value, line_in(fn), "causal_mask")


def test_causal_mask_more_rows_than_cols_at_call_time(rng):
    def fn(q, k):
        return graphc.causal_mask(rows=q.shape[0], cols=k.shape[0])
    exe = graphc.compile(graphc.trace(fn, spec(("S", 2)), spec(("T", 2))))
    with pytest.raises(graphc.GraphcError) as ei:
        exe(randn(rng, (4, 2)), randn(rng, (3, 2)))
    assert_reported_at(ei.value, line_in(fn), "causal_mask")


@pytest.mark.parametrize("attrs", [dict(rows=3, cols=3, dtype="int32"),
                                   dict(rows=3, cols=3, dtype="int8"),
                                   dict(rows=3, cols=3, dtype="bogus"),
                                   dict(rows=-1, cols=3), dict(rows=2, cols=-4),
                                   dict(rows=2.5, cols=4), dict(rows="not a name", cols=4),
                                   dict(rows=None, cols=4)], ids=str)
def test_causal_mask_bad_attrs(attrs):
    with pytest.raises(graphc.AttrError) as ei:
        at = next_line()
        graphc.causal_mask(**attrs)
    assert_reported_at(ei.value, at, "causal_mask")


def test_causal_mask_missing_attr():
    def fn():
        return graphc.causal_mask(rows=3)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn)
    assert_reported_at(ei.value, line_in(fn), "causal_mask")


# -- compiled backends ------------------------------------------------------------------



# -- arange -----------------------------------------------------------------------------

def _range(*args):
    return np.array(list(range(*args)), np.int64)


@pytest.mark.parametrize("args", [(5,), (0,), (1,), (2, 9), (9, 2), (2, 9, 3), (10, 1, -3),
                                  (-4, 4, 2), (3, 3), (5, -6, -1), (0, 7, 10)], ids=str)
def test_arange_static(args):
    g = check(lambda: graphc.arange(*args), [], [()], lambda: _range(*args),
              out_dtypes=["int64"])
    assert g.output_types[0].shape == (len(range(*args)),)


@pytest.mark.parametrize("dtype", ["int32", "int64", "float32", "float64", np.float32])
def test_arange_dtypes_eager(dtype):
    out = graphc.arange(-3, 8, 2, dtype=dtype)
    assert type(out) is np.ndarray and out.dtype == np.dtype(dtype)
    assert_matches(out, _range(-3, 8, 2), dtype)


def test_arange_symbolic_bounds(rng):
    """arange(S), arange(2, S + 2), arange(S, T), arange(0, 2 S, 2): positions for any S."""
    def fn(x, y):
        S, T = x.shape[0], y.shape[0]
        return (graphc.arange(S), graphc.arange(2, S + 2, dtype="int32"),
                graphc.arange(S, T, dtype="float32"), graphc.arange(0, 2 * S, 2),
                graphc.arange(T, 0, -1, dtype="float64"), graphc.arange(3 * T - 1, -1, -3))

    def want(x, y):
        S, T = len(x), len(y)
        return (_range(0, S), _range(2, S + 2), _range(S, T), _range(0, 2 * S, 2),
                _range(T, 0, -1), _range(3 * T - 1, -1, -3))
    cases = [(randn(rng, (s, 2)), randn(rng, (t, 2))) for s, t in [(1, 1), (3, 7), (0, 4)]]
    g = check(fn, [spec(("S", 2)), spec(("T", 2))], cases, want,
              out_dtypes=["int64", "int32", "float32", "int64", "float64", "int64"])
    S, T = graphc.Sym.of("S"), graphc.Sym.of("T")
    assert [t.shape for t in g.output_types] == [(S,), (S,), (T - S,), (S,), (T,), (T,)]
    check_compiled(fn, [spec(("S", 2)), spec(("T", 2))], cases[:2], want)


def test_arange_positions_in_a_model(rng):
    """Float positions times frequencies (rope's angles) through the frontend, fused."""
    inv = np.array([1.0, 0.1, 0.01], np.float32)

    def fn(x):
        pos = graphc.arange(x.shape[1], dtype="float32")
        return graphc.sin(pos[:, None] * inv[None, :]) + x

    def want(x):
        return np.sin(np.arange(x.shape[1])[:, None] * inv.astype(np.float64)) + x
    cases = [(randn(rng, (1, n, 3)),) for n in (1, 6)]
    check(fn, [spec((1, "S", 3))], cases, want)
    check_compiled(fn, [spec((1, "S", 3))], cases, want)


@pytest.mark.parametrize("args,kw", [((2.5,), {}), ((0, 4.0), {}), ((0, 4, 0), {}),
                                     ((0, 4, 1.5), {}), ((True,), {}), ((None,), {}),
                                     ((4,), {"dtype": "bool"}), ((4,), {"dtype": "int8"}),
                                     ((4,), {"dtype": "bogus"})], ids=str)
def test_arange_bad_attrs(args, kw):
    with pytest.raises(graphc.AttrError) as ei:
        at = next_line()
        graphc.arange(*args, **kw)
    assert_reported_at(ei.value, at, "arange")


def test_arange_symbolic_step_must_divide():
    def fn(x):
        return graphc.arange(0, x.shape[0], 2)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec(("S", 3)))
    assert_reported_at(ei.value, line_in(fn), "arange")
    assert "step" in str(ei.value) and "S" in str(ei.value)


def test_arange_negative_symbolic_length_at_call_time(rng):
    def fn(x):
        return graphc.arange(2, x.shape[0])
    for backend in ("reference", "numba"):
        exe = graphc.compile(graphc.trace(fn, spec(("S",))), backend=backend)
        assert_matches(exe(randn(rng, (5,))), _range(2, 5), np.int64)
        assert exe(randn(rng, (2,))).shape == (0,)
        with pytest.raises(graphc.InputError) as ei:
            exe(randn(rng, (1,)))
        assert_reported_at(ei.value, line_in(fn), "arange")


# -- triu / tril ------------------------------------------------------------------------

def _tri(x, k, upper):
    """np.triu / np.tril written out: keep element (i, j) of each matrix where j - i >= k
    (upper) or j - i <= k (lower)."""
    x = np.asarray(x)
    out = np.zeros_like(x)
    n, m = x.shape[-2:]
    for i in range(n):
        for j in range(m):
            if (j - i >= k) if upper else (j - i <= k):
                out[..., i, j] = x[..., i, j]
    return out


def _draw(rng, shape, dtype):
    if dtype == "bool":
        return rng.random(shape) < 0.6
    if dtype.startswith("int"):
        return rng.integers(1, 100, shape).astype(dtype)
    return randn(rng, shape, dtype)


TRI_CASES = [((4, 4), 0), ((4, 4), 1), ((4, 4), -2), ((3, 6), 2), ((6, 3), -1), ((5, 5), 7),
             ((5, 5), -9), ((2, 3, 4, 5), 0), (("S", 5), 1), ((5, "S"), -1), ((2, "S", "S"), 0)]


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "bool"])
@pytest.mark.parametrize("shape,k", TRI_CASES, ids=str)
@pytest.mark.parametrize("name", ["triu", "tril"])
def test_triu_tril(name, shape, k, dtype, rng):
    op = getattr(graphc, name)
    cases = [(_draw(rng, concrete(shape, {"S": n}), dtype),) for n in (1, 4)]
    check(lambda x: op(x, k=k), [spec(shape, dtype)], cases,
          lambda x: _tri(x, k, name == "triu"), out_dtypes=[dtype])


@pytest.mark.slow       # the op matrix compiles triu and tril on every backend in the quick suite
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
def test_triu_tril_compiled(dtype, rng):
    """On numba and cupy-emu: alone, fused into elementwise work, before a reduction (a
    prologue), after a softmax (an epilogue pulled from its buffer), and via the tensor
    methods (torch's diagonal= positional)."""
    def fn(x, s):
        outs = [graphc.triu(x), graphc.tril(x, k=-1), x.triu(2), x.tril(1)]
        if dtype != "bool":
            outs.append(graphc.sum(graphc.tril(x, k=1), axis=-1))
        if dtype == "float32":
            outs += [graphc.triu(graphc.softmax(s, axis=-1), k=1) * 3.0,
                     graphc.tril(s * 2.0 + 1.0)]
        return tuple(outs)

    def want(x, s):
        outs = [_tri(x, 0, True), _tri(x, -1, False), _tri(x, 2, True), _tri(x, 1, False)]
        if dtype != "bool":
            outs.append(_tri(x, 1, False).sum(-1))
        if dtype == "float32":
            e = np.exp(s - s.max(-1, keepdims=True))
            outs += [_tri(e / e.sum(-1, keepdims=True), 1, True) * 3, _tri(s * 2 + 1, 0, False)]
        return tuple(outs)
    cases = [(_draw(rng, (2, n, 5), dtype), randn(rng, (n, n))) for n in (1, 3, 8)]
    check_compiled(fn, [spec((2, "S", 5), dtype), spec(("S", "S"))], cases, want)


@pytest.mark.parametrize("name", ["triu", "tril"])
def test_tri_needs_a_matrix(name, rng):
    with pytest.raises(graphc.ShapeError) as ei:
        at = next_line()
        getattr(graphc, name)(randn(rng, (5,)))
    assert_reported_at(ei.value, at, name)
    assert "rank >= 2" in str(ei.value) and "[5]" in str(ei.value)


@pytest.mark.parametrize("k", [0.5, True, "1", None])
@pytest.mark.parametrize("name", ["triu", "tril"])
def test_tri_bad_diagonal(name, k):
    op = getattr(graphc, name)

    def fn(x):
        return op(x, k=k)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3, 3)))
    assert_reported_at(ei.value, line_in(fn), name)


def _sort_py(lane, descending):
    """Python's stable sort on (NaN-ness, value): NaN last ascending, first descending."""
    import math
    key = (lambda i: (not math.isnan(lane[i]), -lane[i] if not math.isnan(lane[i]) else 0)) \
        if descending else (lambda i: (math.isnan(lane[i]), lane[i] if not math.isnan(lane[i]) else 0))
    return sorted(range(len(lane)), key=key)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("backend", ["reference", "numba", "cupy-emu"])
def test_sort_stable_with_nan_and_ties(descending, backend, rng):
    x = rng.integers(-2, 3, (4, 9)).astype(np.float32)       # many ties
    x[0, 3] = x[2, 0] = x[2, 5] = np.nan
    x[1, 4], x[1, 7] = np.inf, -np.inf
    g = graphc.trace(lambda a: graphc.sort(a, descending=descending), spec(("S", 9)))
    vals, idx = graphc.compile(g, backend=backend)(x)
    want = np.array([_sort_py(list(row), descending) for row in x])
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_array_equal(vals, np.take_along_axis(x, want, axis=1))


def test_sort_bad_attrs():
    with pytest.raises(graphc.AttrError, match="descending"):
        graphc.trace(lambda a: graphc.ops.sort(a, descending="yes"), spec((3,)))
    with pytest.raises(graphc.AttrError, match="output"):
        graphc.trace(lambda a: graphc.ops.sort(a, output="both"), spec((3,)))


def test_index_put_out_of_range_is_an_input_error(rng):
    def fn(x, i, v):
        return graphc.index_put(x, v, i)
    g = graphc.trace(fn, graphc.spec((4, 2)), graphc.spec((3,), "int64"), graphc.spec((3, 2)))
    x, v = (rng.standard_normal(s).astype(np.float32) for s in ((4, 2), (3, 2)))
    for backend in ("reference", "numba", "cupy-emu"):
        exe = graphc.compile(g, backend=backend)
        with pytest.raises(graphc.InputError, match="out of range"):
            exe(x, np.array([0, 4, 1]), v)
        got = exe(x, np.array([0, -1, 1]), v)
        want = x.copy()
        want[[0, 3, 1]] = v
        np.testing.assert_array_equal(got, want)


def test_index_put_accumulate_adds_repeats(rng):
    x = rng.standard_normal((5, 3)).astype(np.float32)
    v = rng.standard_normal((4, 3)).astype(np.float32)
    i = np.array([1, 1, 4, 1])
    g = graphc.trace(lambda a, j, b: graphc.index_put(a, b, j, accumulate=True),
                     spec(("S", 3)), spec(("N",), "int64"), spec(("N", 3)))
    want = x.astype(np.float64).copy()
    for r, row in zip(i, v):
        want[r] += row
    for backend in ("reference", "numba", "cupy-emu"):
        got = graphc.compile(g, backend=backend)(x, i, v)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_index_put_shape_errors():
    with pytest.raises(graphc.ShapeError, match="do not broadcast"):
        graphc.trace(lambda a, j, b: graphc.index_put(a, b, j),
                     spec((5, 3)), spec((4,), "int64"), spec((2, 3)))
    with pytest.raises(graphc.DTypeError, match="int32 or int64"):
        graphc.trace(lambda a, j, b: graphc.index_put(a, b, j),
                     spec((5, 3)), spec((4,)), spec((4, 3)))
