"""Movement ops (reshape, transpose, slice, concat, embedding, broadcast_to, repeat,
take_along_axis, squeeze / unsqueeze) on the reference backend against NumPy written
here (the op matrix runs them on the compiled backends); their misuse errors."""
import itertools

import numpy as np
import pytest

import graphc
from graphc import spec
from opcheck import (FLOATS, assert_matches, assert_reported_at, check, concrete, line_in,
                     next_line, randn)

SIZES = [{"S": 1}, {"S": 4}]


def _row_major(x, shape):
    """Reshape by walking the elements in row-major order (no np.reshape of x)."""
    flat = np.array([x[idx] for idx in itertools.product(*(range(d) for d in x.shape))],
                    dtype=x.dtype)
    shape = list(shape)
    if -1 in shape:
        k = shape.index(-1)
        rest = int(np.prod([d for i, d in enumerate(shape) if i != k]))
        shape[k] = flat.size // rest
    return flat.reshape(shape)


RESHAPES = [((3, 4), (12,)), ((3, 4), (2, -1)), ((3, 4), (4, 3, 1)), ((2, 3, 4), (6, 4)),
            ((2, 3, 4), (-1,)), ((6,), (1, 2, 1, 3)), ((1,), ()), ((), (1, 1)),
            (("S", 8), (-1,)), (("S", 8), ("S", 2, 4)), (("S", 8), (-1, 4)),
            ((2, "S", 4), (2, -1)), ((2, "S", 4), ("S", 2, 4))]


@pytest.mark.parametrize("dtype", FLOATS + ("int32",))
@pytest.mark.parametrize("shape,target", RESHAPES, ids=str)
def test_reshape(shape, target, dtype, rng):
    cases = []
    for s in SIZES:
        x = randn(rng, concrete(shape, s), "float64") * 100
        cases.append((np.asarray(x, dtype),))
    check(lambda x: x.reshape(target), [spec(shape, dtype)], cases,
          lambda x: _row_major(x, concrete(target, {"S": x.shape[shape.index("S")]}
                                            if "S" in shape else {})),
          out_dtypes=[dtype])


def _permute(x, axes):
    """np.transpose spelled with einsum."""
    letters = "abcdefgh"[:x.ndim]
    axes = range(x.ndim - 1, -1, -1) if axes is None else [a % x.ndim for a in axes]
    return np.einsum(f"{letters}->{''.join(letters[a] for a in axes)}", x)


TRANSPOSES = [((3, 4), None), ((3, 4), (1, 0)), ((2, 3, 4), (1, 0, 2)),
              ((2, 3, 4), (-1, 0, 1)), ((2, 3, 4), None), ((5,), None),
              (("S", 8), None), ((2, "S", 4), (0, 2, 1)), ((2, "S", 4, 3), (2, 0, 3, 1))]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axes", TRANSPOSES, ids=str)
def test_transpose(shape, axes, dtype, rng):
    cases = [(randn(rng, concrete(shape, s), dtype),) for s in SIZES]
    check(lambda x: graphc.transpose(x, axes=axes), [spec(shape, dtype)], cases,
          lambda x: _permute(x, axes), out_dtypes=[dtype])


def test_transpose_tensor_forms(rng):
    x = randn(rng, (2, 3, 4))
    check(lambda x: (x.T, x.transpose(2, 0, 1), x.transpose((1, 2, 0)), x.transpose()),
          [spec((2, 3, 4))], [(x,)],
          lambda x: (_permute(x, None), _permute(x, (2, 0, 1)), _permute(x, (1, 2, 0)),
                     _permute(x, None)))


# Index expressions, applied to a traced tensor and (independently) to the NumPy array.
SLICES = {
    "rows": (lambda t: t[1:3]),
    "step": (lambda t: t[:, ::2]),
    "neg_start": (lambda t: t[-2:]),
    "interior": (lambda t: t[1:-1, 2:]),
    "step3_offset": (lambda t: t[1::3, 1:7:2]),
    "past_end": (lambda t: t[2:100, -100:3]),
    "int_index": (lambda t: t[2]),
    "int_and_slice": (lambda t: t[:, -1]),
    "newaxis_ellipsis": (lambda t: t[None, ..., 1:2]),
    "empty": (lambda t: t[3:1]),
}
SYM_SLICES = {
    "tail": (lambda t: t[1:]),
    "drop_last": (lambda t: t[:-1]),
    "last_two": (lambda t: t[-2:]),
    "head": (lambda t: t[:1]),
    "cols": (lambda t: t[:, 2:6]),
    "last_row": (lambda t: t[-1]),
    "window": (lambda t: t[1:, :-3]),
}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(SLICES))
def test_slice_static(name, dtype, rng):
    index = SLICES[name]
    x = randn(rng, (5, 8), dtype)
    check(lambda t: index(t), [spec((5, 8), dtype)], [(x,)], lambda a: index(a))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(SYM_SLICES))
def test_slice_symbolic(name, dtype, rng):
    index = SYM_SLICES[name]
    cases = [(randn(rng, (n, 8), dtype),) for n in (2, 3, 6)]
    check(lambda t: index(t), [spec(("S", 8), dtype)], cases, lambda a: index(a))


@pytest.mark.parametrize("dtype", FLOATS)
def test_slice_op_direct(dtype, rng):
    x = randn(rng, (4, 6, 5), dtype)
    check(lambda t: graphc.slice(t, starts=(1, None), stops=(None, -1), steps=(2, 2)),
          [spec((4, 6, 5), dtype)], [(x,)], lambda a: a[1::2, :-1:2, :])


def test_slice_symbolic_bound_from_another_input(rng):
    """Prefix of a table as long as the input: pos[:S]."""
    def fn(x, table):
        return x + table[:x.shape[0]]
    cases = [(randn(rng, (n, 4)), randn(rng, (10, 4))) for n in (1, 7, 10)]
    check(fn, [spec(("S", 4)), spec((10, 4))], cases, lambda x, t: x + t[:x.shape[0]])


def test_slice_past_symbolic_end_fails_at_call_time(rng):
    def fn(x):
        return x[:5]
    exe = graphc.compile(graphc.trace(fn, spec(("S", 4))))
    assert exe(randn(rng, (6, 4))).shape == (5, 4)
    with pytest.raises(graphc.GraphcError) as ei:
        exe(randn(rng, (3, 4)))
    assert_reported_at(ei.value, line_in(fn), "slice")


def test_symbolic_bounds_that_go_negative_fail_at_call_time(rng):
    table = randn(rng, (10, 2))

    def fn(x):
        return graphc.constant(table)[x.shape[0] - 5:x.shape[0] - 3]
    exe = graphc.compile(graphc.trace(fn, spec(("S", 2))), backend="reference", level="O0")
    assert_matches(exe(randn(rng, (6, 2))), table[1:3].astype(np.float64), np.float32)
    with pytest.raises(graphc.GraphcError) as ei:
        exe(randn(rng, (2, 2)))   # S-5:S-3 = -3:-1 would read rows 7:9
    assert_reported_at(ei.value, line_in(fn), "slice")


CONCATS = [([(2, 3), (4, 3)], 0), ([(2, 3), (2, 5)], 1), ([(2, 3), (2, 1), (2, 2)], -1),
           ([(3,)], 0), ([(2, 3, 4), (2, 1, 4)], 1), ([("S", 4), ("T", 4)], 0),
           ([("S", 4), ("S", 2)], -1), ([("S", 4), (3, 4), ("S", 4)], 0)]


@pytest.mark.parametrize("dtype", FLOATS + ("int64",))
@pytest.mark.parametrize("shapes,axis", CONCATS, ids=str)
def test_concat(shapes, axis, dtype, rng):
    sizes = [{"S": 1, "T": 3}, {"S": 4, "T": 2}]
    cases = [tuple(np.asarray(randn(rng, concrete(sh, s), "float64") * 100, dtype)
                   for sh in shapes) for s in sizes]

    def want(*xs):
        # Fill an empty result block by block.
        ax = axis % xs[0].ndim
        shape = list(xs[0].shape)
        shape[ax] = sum(x.shape[ax] for x in xs)
        out = np.empty(shape, xs[0].dtype)
        start = 0
        for x in xs:
            idx = [slice(None)] * x.ndim
            idx[ax] = slice(start, start + x.shape[ax])
            out[tuple(idx)] = x
            start += x.shape[ax]
        return out
    check(lambda *xs: graphc.concat(list(xs), axis=axis), [spec(sh, dtype) for sh in shapes],
          cases, want, out_dtypes=[dtype])


def test_concat_argument_forms(rng):
    a, b = randn(rng, (2, 3)), randn(rng, (2, 3))
    want0, want1 = np.vstack([a, b]), np.hstack([a, b])
    for got, want in [(graphc.concat([a, b]), want0), (graphc.concat([a, b], 1), want1),
                      (graphc.concat(a, b, axis=1), want1), (graphc.concat(a, b, 0), want0),
                      (graphc.concat((a, b), axis=-1), want1)]:
        assert type(got) is np.ndarray
        assert_matches(got, want, np.float32)


def _gather(table, ids):
    rows = [table[int(i)] for i in np.ravel(ids)]
    return np.array(rows, dtype=table.dtype).reshape(np.shape(ids) + table.shape[1:])


@pytest.mark.parametrize("id_dtype", ["int32", "int64"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("tshape,ishape", [((10, 8), (3,)), ((10, 8), (2, 3)),
                                           ((10, 8), ("S",)), ((10,), ("S", 2)),
                                           ((10, 2, 3), ("S",)), ((10, 8), ())], ids=str)
def test_embedding(tshape, ishape, dtype, id_dtype, rng):
    n = tshape[0]
    cases = []
    for s in SIZES:
        ids = rng.integers(0, n, concrete(ishape, s)).astype(id_dtype)
        ids.flat[0] = n - 1   # the last row is in range
        cases.append((randn(rng, tshape, dtype), ids))
    check(lambda t, i: graphc.embedding(t, i), [spec(tshape, dtype), spec(ishape, id_dtype)],
          cases, _gather, out_dtypes=[dtype])


def test_embedding_by_indexing_with_constant_table(rng):
    table = randn(rng, (16, 4))
    ids = rng.integers(0, 16, (5,))
    g = check(lambda i: graphc.constant(table, "table")[i], [spec(("S",), "int64")], [(ids,)],
              lambda i: _gather(table.astype(np.float64), i))
    assert "embedding" in g.op_counts()


@pytest.mark.parametrize("bad", [10, -1, 1000])
def test_embedding_out_of_range_fails_at_call_time(bad, rng):
    def fn(t, i):
        return graphc.embedding(t, i)
    exe = graphc.compile(graphc.trace(fn, spec((10, 4)), spec(("S",), "int64")))
    table = randn(rng, (10, 4))
    ids = np.array([0, 9, bad, 3])
    with pytest.raises(graphc.GraphcError) as ei:
        exe(table, ids)
    assert str(bad) in str(ei.value)
    assert_reported_at(ei.value, line_in(fn), "embedding")
    with pytest.raises(graphc.GraphcError):
        graphc.compile(graphc.trace(fn, spec((10, 4)), spec(("S",), "int64")),
                       backend="reference", float64=True)(table, ids)


def test_embedding_out_of_range_eager(rng):
    with pytest.raises(graphc.GraphcError) as ei:
        at = next_line()
        graphc.embedding(randn(rng, (3, 2)), np.array([[0, 3]]))
    assert_reported_at(ei.value, at, "embedding")


def test_eager_calls_return_numpy(rng):
    x = randn(rng, (3, 4))
    table, ids = randn(rng, (5, 2)), np.array([4, 0, 4])
    for got, want in [(graphc.reshape(x, shape=(2, 6)), _row_major(x, (2, 6))),
                      (graphc.transpose(x), _permute(x, None)),
                      (graphc.slice(x, starts=(1,), stops=(3,), steps=(1,)), x[1:3]),
                      (graphc.concat([x, x], axis=1), np.hstack([x, x])),
                      (graphc.embedding(table, ids), _gather(table, ids))]:
        assert type(got) is np.ndarray
        assert_matches(got, want, np.float32)


def _values(rng, shape, dtype):
    """Fresh random values of ``dtype``: floats with no zeros, ints in +-100, bools."""
    if dtype == "bool":
        return np.asarray(rng.random(shape) < 0.5)
    x = randn(rng, shape, "float64") * 100
    return np.asarray(x, dtype)


BROADCASTS = [((3,), (4, 3)), ((1,), (5,)), ((2, 1), (2, 7)), ((1, 3, 1), (4, 3, 5)),
              ((), (2, 3)), ((3, 1), (2, 3, 4)), (("S", 1), ("S", 6)), ((1, 5), (3, 5)),
              ((2, 1, "S"), (3, 2, 4, "S")), ((4,), (4,))]


@pytest.mark.parametrize("dtype", FLOATS + ("int64", "bool"))
@pytest.mark.parametrize("shape,target", BROADCASTS, ids=str)
def test_broadcast_to(shape, target, dtype, rng):
    cases = [(_values(rng, concrete(shape, s), dtype),) for s in SIZES + [{"S": 3}]]

    def want(x):
        # Broadcasting by arithmetic against ones (no np.broadcast_to).
        n = x.ndim if "S" not in shape else None
        t = concrete(target, {"S": x.shape[shape.index("S")]} if n is None else {})
        if x.dtype == bool:
            return np.logical_and(x, np.ones(t, bool))
        return x * np.ones(t, x.dtype)
    check(lambda x: graphc.broadcast_to(x, target), [spec(shape, dtype)], cases, want,
          out_dtypes=[dtype])


def test_broadcast_to_tensor_forms(rng):
    x, y = randn(rng, (3, 1, 4)), randn(rng, (2, 3, 5, 4))
    g = check(lambda x, y: (x.expand(2, 3, 5, 4), x.expand(-1, 5, -1), x.expand_as(y),
                            x.broadcast_to((3, 6, 4)), x.expand(3, 1, 4)),
              [spec((3, 1, 4)), spec((2, 3, 5, 4))], [(x, y)],
              lambda x, y: (x * np.ones((2, 3, 5, 4)), x * np.ones((3, 5, 4)),
                            x * np.ones(y.shape), x * np.ones((3, 6, 4)), x))
    assert g.op_counts()["broadcast_to"] == 4    # expand to its own shape is x itself


def _repeat_by_take(x, r, axis):
    """Each element r times along axis, by indexing with i // r (no np.repeat)."""
    if axis is None:
        x, axis = x.reshape(-1), 0
    n = x.shape[axis]
    return np.take(x, np.arange(n * r) // r, axis=axis)


REPEATS = [((5,), 3, 0), ((3, 4), 2, 1), ((3, 4), 1, 0), ((2, 3, 4), 4, -2),
           ((2, 3, 4), 2, None), (("S", 3), 2, 0), (("S", 3), 3, -1), ((2, 3, "S", 5), 4, 1),
           ((), 3, None)]


@pytest.mark.parametrize("dtype", FLOATS + ("int32", "bool"))
@pytest.mark.parametrize("shape,r,axis", REPEATS, ids=str)
def test_repeat(shape, r, axis, dtype, rng):
    cases = [(_values(rng, concrete(shape, s), dtype),) for s in SIZES + [{"S": 5}]]
    check(lambda x: graphc.repeat(x, r, axis=axis), [spec(shape, dtype)], cases,
          lambda x: _repeat_by_take(x, r, axis), out_dtypes=[dtype])


def test_repeat_argument_forms(rng):
    x = randn(rng, (2, 3, 4))
    g = check(lambda x: (graphc.repeat(x, 2, 1), graphc.repeat(x, 3, axis=-1),
                         x.repeat_interleave(2, dim=0), x.repeat_interleave(2),
                         graphc.repeat(x, repeats=2, axis=2)),
              [spec((2, 3, 4))], [(x,)],
              lambda x: (_repeat_by_take(x, 2, 1), _repeat_by_take(x, 3, 2),
                         _repeat_by_take(x, 2, 0), _repeat_by_take(x, 2, None),
                         _repeat_by_take(x, 2, 2)))
    assert g.op_counts()["repeat"] == 5
    got = graphc.repeat(x, 2, axis=1)
    assert type(got) is np.ndarray
    assert_matches(got, _repeat_by_take(x, 2, 1), np.float32)


def _take_loops(x, index, axis):
    """take_along_axis by walking the output (broadcasting x and index on the other axes;
    negative ids count from the end)."""
    axis %= x.ndim
    shape = [i if k == axis else max(a, i) for k, (a, i) in enumerate(zip(x.shape, index.shape))]
    out = np.empty(shape, x.dtype)
    for o in itertools.product(*(range(d) for d in shape)):
        ii = tuple(0 if index.shape[k] == 1 else o[k] for k in range(x.ndim))
        src = [0 if x.shape[k] == 1 else o[k] for k in range(x.ndim)]
        src[axis] = int(index[ii]) % x.shape[axis]
        out[o] = x[tuple(src)]
    return out


TAKES = [((5,), (3,), 0), ((4, 6), (4, 2), 1), ((4, 6), (7, 6), 0), ((4, 6), (4, 1), -1),
         ((3, 1, 5), (3, 4, 2), 2), ((1, 5), (3, 5), 1), ((2, 3, 4), (1, 3, 4), 0),
         (("S", 6), ("S", 3), -1), (("S", 6), (1, 2), 1), ((7, "S"), (2, "S"), 0),
         ((2, "S", 5), (2, "S", 9), 2)]


@pytest.mark.parametrize("id_dtype", ["int32", "int64"])
@pytest.mark.parametrize("dtype", FLOATS + ("int64", "bool"))
@pytest.mark.parametrize("xshape,ishape,axis", TAKES, ids=str)
def test_take_along_axis(xshape, ishape, axis, dtype, id_dtype, rng):
    cases = []
    for s in SIZES + [{"S": 3}]:
        x = _values(rng, concrete(xshape, s), dtype)
        n = x.shape[axis]
        ids = rng.integers(-n, n, concrete(ishape, s)).astype(id_dtype)
        ids.flat[0] = n - 1                 # the last entry and the first from the end
        ids.flat[-1] = -n
        cases.append((x, ids))
    check(lambda x, i: graphc.take_along_axis(x, i, axis),
          [spec(xshape, dtype), spec(ishape, id_dtype)], cases,
          lambda x, i: _take_loops(x, i, axis), out_dtypes=[dtype])


def test_take_along_axis_tensor_forms(rng):
    x = randn(rng, (3, 5))
    ids = rng.integers(0, 5, (3, 4))
    check(lambda x, i: (x.gather(1, i), x.take_along_axis(i, 1), x.gather(-1, i)),
          [spec((3, 5)), spec((3, 4), "int64")], [(x, ids)],
          lambda x, i: (_take_loops(x, i, 1),) * 3)
    # torch's topk-then-gather idiom: the values at the top-2 ids
    vals = rng.permutation(15).reshape(3, 5).astype(np.float32) + 0.5
    g = graphc.trace(lambda x: x.gather(1, graphc.topk(x, 2)[1]), spec((3, 5)))
    got = graphc.compile(g, backend="reference")(vals)
    assert_matches(got, -np.sort(-vals.astype(np.float64), axis=1)[:, :2], np.float32)


@pytest.mark.parametrize("backend", ["numba", "cupy-emu"])
def test_take_along_axis_compiled_negative_ids(backend, rng):
    """Negative ids (from the end) and broadcasting on the compiled backends; the op
    matrix draws ids in [0, n) only."""
    def fn(x, i):
        return graphc.take_along_axis(x, i, axis=-1) * 2.0
    g = graphc.trace(fn, spec(("S", 1, 7)), spec((1, 3, "T"), "int32"))
    exe = graphc.compile(g, backend=backend)
    for S, T in [(1, 3), (4, 5)]:
        x = randn(rng, (S, 1, 7))
        ids = rng.integers(-7, 7, (1, 3, T)).astype(np.int32)
        ids[0, 0, 0], ids[0, -1, -1] = -7, 6
        want = _take_loops(x.astype(np.float64), ids, -1) * 2
        assert_matches(exe(x, ids), want, np.float32)


SQUEEZES = [((1, 3), 0), ((3, 1), -1), ((1, 3, 1), None), ((1, 3, 1), (0, 2)), ((1,), 0),
            ((2, 1, "S"), 1), (("S", 1, 1), (-1, 1)), ((1, 1), None)]


@pytest.mark.parametrize("shape,axis", SQUEEZES, ids=str)
def test_squeeze(shape, axis, rng):
    cases = [(randn(rng, concrete(shape, s)),) for s in SIZES]
    axes = None if axis is None else (axis if isinstance(axis, tuple) else (axis,))

    def want(x):
        keep = [d for k, d in enumerate(x.shape)
                if not (d == 1 and (axes is None or k in [a % x.ndim for a in axes])
                        and (axes is not None or shape[k] == 1))]
        return x.reshape(keep)
    check(lambda x: graphc.squeeze(x, axis), [spec(shape)], cases, want)


UNSQUEEZES = [((3,), 0), ((3,), 1), ((3,), -1), ((3,), -2), ((2, 3), 1), ((), 0),
              (("S", 4), 2), (("S", 4), -3)]


@pytest.mark.parametrize("shape,axis", UNSQUEEZES, ids=str)
def test_unsqueeze(shape, axis, rng):
    cases = [(randn(rng, concrete(shape, s)),) for s in SIZES]

    def want(x):
        a = axis % (x.ndim + 1)
        return x.reshape(x.shape[:a] + (1,) + x.shape[a:])
    check(lambda x: graphc.unsqueeze(x, axis), [spec(shape)], cases, want)


def test_squeeze_unsqueeze_tensor_forms_and_eager(rng):
    x = randn(rng, (1, 3, 1, 2))
    check(lambda x: (x.squeeze(), x.squeeze(0), x.squeeze(1), x.squeeze((0, 2)),
                     x.unsqueeze(-1), x.unsqueeze(0)),
          [spec((1, 3, 1, 2))], [(x,)],
          lambda x: (x.reshape(3, 2), x.reshape(3, 1, 2), x, x.reshape(3, 2),
                     x.reshape(1, 3, 1, 2, 1), x.reshape(1, 1, 3, 1, 2)))
    for got, want in [(graphc.squeeze(x, 2), x.reshape(1, 3, 2)),
                      (graphc.unsqueeze(x, 4), x.reshape(1, 3, 1, 2, 1))]:
        assert type(got) is np.ndarray
        assert_matches(got, want.astype(np.float64), np.float32)


# -- errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape,target", [((3, 4), (5,)), ((3, 4), (-1, -1)),
                                          ((3, 4), (-1, 5)), ((3, 4), (-2, -6)),
                                          (("S", 8), (3, -1)), (("S", 8), ("T", 8))], ids=str)
def test_reshape_bad_target(shape, target):
    def fn(x):
        return x.reshape(target)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec(shape))
    assert_reported_at(ei.value, line_in(fn), "reshape")


@pytest.mark.parametrize("target", [(2.5, 4), ("not a name", 4), (True, 12)], ids=str)
def test_reshape_bad_dim_value(target):
    def fn(x):
        return graphc.reshape(x, shape=target)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3, 4)))
    assert_reported_at(ei.value, line_in(fn), "reshape")


@pytest.mark.parametrize("axes", [(0, 0, 1), (0, 1), (0, 1, 3), (0, 1, 2.0)], ids=str)
def test_transpose_bad_axes(axes):
    def fn(x):
        return graphc.transpose(x, axes=axes)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((2, 3, 4)))
    assert_reported_at(ei.value, line_in(fn), "transpose")


@pytest.mark.parametrize("attrs", [dict(starts=(0,), stops=(2,), steps=(0,)),
                                   dict(starts=(0,), stops=(2,), steps=(-1,)),
                                   dict(starts=(0, 0, 0), stops=(1, 1, 1), steps=(1, 1, 1)),
                                   dict(starts=(0, 0), stops=(1,), steps=(1, 1))], ids=str)
def test_slice_bad_attrs(attrs):
    def fn(x):
        return graphc.slice(x, **attrs)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((4, 4)))
    assert_reported_at(ei.value, line_in(fn), "slice")


def test_slice_step_over_symbolic_dim():
    def fn(x):
        return x[::2]
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec(("S", 4)))
    assert_reported_at(ei.value, line_in(fn), "slice")


@pytest.mark.parametrize("shapes,axis", [([(2, 3), (3, 3)], 1), ([(2, 3), (2,)], 0),
                                         ([("S", 3), ("T", 3)], 1), ([(2, 3)], 2)], ids=str)
def test_concat_bad_shapes(shapes, axis):
    def fn(*xs):
        return graphc.concat(list(xs), axis=axis)
    err = graphc.AttrError if axis == 2 else graphc.ShapeError
    with pytest.raises(err) as ei:
        graphc.trace(fn, *(spec(s) for s in shapes))
    assert_reported_at(ei.value, line_in(fn), "concat")


def test_concat_dtypes_must_match():
    def fn(a, b):
        return graphc.concat([a, b])
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((2, 3), "float32"), spec((2, 3), "float64"))
    assert_reported_at(ei.value, line_in(fn), "concat")


@pytest.mark.parametrize("id_dtype", ["float32", "bool"])
def test_embedding_ids_must_be_int(id_dtype):
    def fn(t, i):
        return graphc.embedding(t, i)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((10, 4)), spec((3,), id_dtype))
    assert_reported_at(ei.value, line_in(fn), "embedding")


def test_embedding_table_needs_rank_1():
    def fn(t, i):
        return graphc.embedding(t, i)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec(()), spec((3,), "int64"))
    assert_reported_at(ei.value, line_in(fn), "embedding")


@pytest.mark.parametrize("shape,target,names", [
    ((3, 4), (4, 4), ("f32[3,4]", "[4,4]")), ((3, 4), (4,), ("f32[3,4]", "[4]")),
    ((3, 4), (2, 3, 5), ("f32[3,4]", "[2,3,5]")), (("S", 4), (3, 4), ("f32[S,4]", "[3,4]")),
    (("S", 4), ("T", 4), ("f32[S,4]", "[T,4]")), ((1, 4), (-1, 4), ("[-1,4]",))], ids=str)
def test_broadcast_to_bad_shape(shape, target, names):
    def fn(x):
        return graphc.broadcast_to(x, target)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec(shape))
    assert_reported_at(ei.value, line_in(fn), "broadcast_to")
    for n in names:
        assert n in str(ei.value), str(ei.value)


def test_broadcast_to_bad_dim_value():
    def fn(x):
        return graphc.broadcast_to(x, (2.5, 4))
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((1, 4)))
    assert_reported_at(ei.value, line_in(fn), "broadcast_to")


def test_expand_to_fewer_dims():
    def fn(x):
        return x.expand(4)
    with pytest.raises(graphc.GraphcError) as ei:
        graphc.trace(fn, spec((3, 4)))
    assert_reported_at(ei.value, line_in(fn))
    assert "f32[3,4]" in str(ei.value)


@pytest.mark.parametrize("repeats", [0, -2, 2.0, True, None], ids=str)
def test_repeat_bad_repeats(repeats):
    def fn(x):
        return graphc.repeat(x, repeats, axis=0)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec(("S", 3)))
    assert_reported_at(ei.value, line_in(fn), "repeat")
    assert "f32[S,3]" in str(ei.value) and "repeats" in str(ei.value)


@pytest.mark.parametrize("axis", [2, -3, 1.0, "x"], ids=str)
def test_repeat_bad_axis(axis):
    def fn(x):
        return graphc.repeat(x, 2, axis=axis)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((2, "S")))
    assert_reported_at(ei.value, line_in(fn), "repeat")
    assert "f32[2,S]" in str(ei.value)


def test_repeat_interleave_needs_int():
    def fn(x):
        return x.repeat_interleave(2.5, dim=0)
    with pytest.raises(graphc.GraphcError) as ei:
        graphc.trace(fn, spec((2, 3)))
    assert_reported_at(ei.value, line_in(fn))


@pytest.mark.parametrize("id_dtype", ["float32", "float64", "bool"])
def test_take_along_axis_index_must_be_int(id_dtype):
    def fn(x, i):
        return graphc.take_along_axis(x, i, axis=1)
    with pytest.raises(graphc.DTypeError) as ei:
        graphc.trace(fn, spec((3, 5)), spec((3, 2), id_dtype))
    assert_reported_at(ei.value, line_in(fn), "take_along_axis")
    assert "[3,2]" in str(ei.value) and "f32[3,5]" in str(ei.value)


@pytest.mark.parametrize("xshape,ishape,names", [
    ((3, 5), (3,), ("f32[3,5]", "i64[3]")), ((3, 5), (1, 3, 2), ("f32[3,5]", "i64[1,3,2]")),
    ((3, 5), (4, 2), ("f32[3,5]", "i64[4,2]")), (("S", 5), ("T", 2), ("f32[S,5]", "i64[T,2]")),
    ((), (), ("f32[]",))], ids=str)
def test_take_along_axis_bad_shapes(xshape, ishape, names):
    def fn(x, i):
        return graphc.take_along_axis(x, i, axis=-1)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec(xshape), spec(ishape, "int64"))
    assert_reported_at(ei.value, line_in(fn), "take_along_axis")
    for n in names:
        assert n in str(ei.value), str(ei.value)


@pytest.mark.parametrize("axis", [2, -3, None, 0.0], ids=str)
def test_take_along_axis_bad_axis(axis):
    def fn(x, i):
        return graphc.take_along_axis(x, i, axis=axis)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((3, 5)), spec((3, 2), "int64"))
    assert_reported_at(ei.value, line_in(fn), "take_along_axis")
    assert "f32[3,5]" in str(ei.value)


@pytest.mark.parametrize("bad", [5, -6, 1000])
def test_take_along_axis_out_of_range_fails_at_call_time(bad, rng):
    def fn(x, i):
        return graphc.take_along_axis(x, i, axis=1)
    g = graphc.trace(fn, spec(("S", 5)), spec(("S", 2), "int64"))
    x = randn(rng, (3, 5))
    ids = np.array([[0, 4], [bad, 1], [-5, 2]])
    for exe in (graphc.compile(g, backend="reference"),
                graphc.compile(g, backend="reference", float64=True)):
        assert exe(x, np.where(ids == bad, 3, ids)).shape == (3, 2)
        with pytest.raises(graphc.InputError) as ei:
            exe(x, ids)
        assert str(bad) in str(ei.value) and "(3, 5)" in str(ei.value)
        assert_reported_at(ei.value, line_in(fn), "take_along_axis")
    with pytest.raises(graphc.InputError):
        graphc.take_along_axis(x, ids, axis=1)


@pytest.mark.parametrize("shape,axis,names", [((3, 1), 0, ("f32[3,1]", "dim 0", "is 3")),
                                              (("S", 4), 0, ("f32[S,4]", "is S")),
                                              ((2, 1, 3), (1, 2), ("f32[2,1,3]", "dim 2"))],
                         ids=str)
def test_squeeze_of_a_dim_that_is_not_1(shape, axis, names):
    def fn(x):
        return graphc.squeeze(x, axis)
    with pytest.raises(graphc.ShapeError) as ei:
        graphc.trace(fn, spec(shape))
    assert_reported_at(ei.value, line_in(fn), "squeeze")
    for n in names:
        assert n in str(ei.value), str(ei.value)


@pytest.mark.parametrize("op,axis", [("squeeze", 2), ("squeeze", -3), ("squeeze", 0.5),
                                     ("unsqueeze", 3), ("unsqueeze", -4), ("unsqueeze", None)],
                         ids=str)
def test_squeeze_unsqueeze_bad_axis(op, axis):
    def fn(x):
        return getattr(graphc, op)(x, axis)
    with pytest.raises(graphc.AttrError) as ei:
        graphc.trace(fn, spec((1, 3)))
    assert_reported_at(ei.value, line_in(fn), op)
    assert "f32[1,3]" in str(ei.value)
    with pytest.raises(graphc.AttrError):
        getattr(graphc, op)(np.ones((1, 3), np.float32), axis)
