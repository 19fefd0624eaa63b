"""Movement ops (reshape, transpose, slice, concat, embedding) on the reference backend
against NumPy written here."""
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
