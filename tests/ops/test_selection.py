"""topk and causal_mask on the reference backend against NumPy / Python written here."""
import numpy as np
import pytest

import graphc
from graphc import spec
from opcheck import (FLOATS, assert_matches, assert_reported_at, check, concrete, line_in,
                     next_line, randn)


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
