"""tensor[index] under graphc.trace: ints, negative ints, slices with steps, None,
Ellipsis, and symbolic bounds; each checked against NumPy indexing of the same array."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import graphc
from frontend_check import assert_close, compile_traced, randn


STATIC_INDEXES = {
    "int": lambda t: t[1],
    "negative int": lambda t: t[-1],
    "two ints": lambda t: t[2, -3],
    "all ints": lambda t: t[0, 1, 2],
    "slice": lambda t: t[1:3],
    "negative slice": lambda t: t[-3:-1],
    "step": lambda t: t[::2],
    "start stop step": lambda t: t[1:4:2, :, 1::3],
    "stop past end": lambda t: t[2:100],
    "empty": lambda t: t[3:1],
    "None": lambda t: t[None],
    "None middle": lambda t: t[:, None, 1],
    "Ellipsis": lambda t: t[..., 2],
    "Ellipsis middle": lambda t: t[1, ..., -2:],
    "Ellipsis and None": lambda t: t[None, ..., None, 0],
    "bare Ellipsis": lambda t: t[...],
    "np.int64": lambda t: t[np.int64(2), :np.int64(3)],
    "full slice": lambda t: t[:, :, :],
}


@pytest.mark.parametrize("case", sorted(STATIC_INDEXES))
def test_static_indexing_matches_numpy(rng, case):
    f = STATIC_INDEXES[case]
    x = randn(rng, (4, 5, 6))
    g = graphc.trace(f, graphc.spec((4, 5, 6)))
    graphc.verify(g)
    want = f(x)
    assert g.output_types[0].shape == want.shape
    assert_close(compile_traced(g)(x), want)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_static_indexing_matches_numpy(data):
    shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    items = []
    for d in shape:
        kind = data.draw(st.sampled_from(["int", "slice", "none-then-slice"]))
        if kind == "int":
            items.append(data.draw(st.integers(-d, d - 1)))
        else:
            if kind == "none-then-slice":
                items.append(None)
            b = st.one_of(st.none(), st.integers(-d - 2, d + 2))
            items.append(slice(data.draw(b), data.draw(b),
                               data.draw(st.one_of(st.none(), st.integers(1, 3)))))
    n_trailing = data.draw(st.integers(0, len(items)))
    index = tuple(items[:len(items) - n_trailing])  # trailing axes left implicit
    if data.draw(st.booleans()):  # an Ellipsis anywhere stands for the implicit axes
        k = data.draw(st.integers(0, len(index)))
        index = index[:k] + (Ellipsis,) + index[k:]
    x = np.asarray(np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
                   .standard_normal(shape))
    try:
        want = x[index]
    except IndexError:  # the Ellipsis moved an int onto an axis too short for it
        assume(False)
    g = graphc.trace(lambda t: t[index], graphc.spec(shape, "float64"))
    assert g.output_types[0].shape == want.shape
    got = compile_traced(g)(x)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


SYMBOLIC_INDEXES = {
    # name: (fn, output type, numpy equivalent given S)
    "x[1:]": (lambda t: t[1:], "f32[S-1,6]", lambda x, S: x[1:]),
    "x[:-1]": (lambda t: t[:-1], "f32[S-1,6]", lambda x, S: x[:-1]),
    "x[-2:]": (lambda t: t[-2:], "f32[2,6]", lambda x, S: x[-2:]),
    "x[1:-1]": (lambda t: t[1:-1], "f32[S-2,6]", lambda x, S: x[1:-1]),
    "x[-1]": (lambda t: t[-1], "f32[6]", lambda x, S: x[-1]),
    "x[0]": (lambda t: t[0], "f32[6]", lambda x, S: x[0]),
    "x[:, 1:5:2]": (lambda t: t[:, 1:5:2], "f32[S,2]", lambda x, S: x[:, 1:5:2]),
    "x[..., -1]": (lambda t: t[..., -1], "f32[S]", lambda x, S: x[..., -1]),
    "x[None, :, 2]": (lambda t: t[None, :, 2], "f32[1,S]", lambda x, S: x[None, :, 2]),
    "x[:, None]": (lambda t: t[:, None], "f32[S,1,6]", lambda x, S: x[:, None]),
    "x[:S-1]": (lambda t: t[:t.shape[0] - 1], "f32[S-1,6]", lambda x, S: x[:S - 1]),
    "x[S-2:]": (lambda t: t[t.shape[0] - 2:], "f32[2,6]", lambda x, S: x[S - 2:]),
    "x[1:][:-1]": (lambda t: t[1:][:-1], "f32[S-2,6]", lambda x, S: x[1:-1]),
}


@pytest.mark.parametrize("case", sorted(SYMBOLIC_INDEXES))
def test_symbolic_indexing(rng, case):
    f, out_type, ref = SYMBOLIC_INDEXES[case]
    g = graphc.trace(f, graphc.spec(("S", 6)))
    graphc.verify(g)
    assert str(g.output_types[0]) == out_type
    exe = compile_traced(g)
    for S in (3, 8):
        x = randn(rng, (S, 6))
        assert_close(exe(x), ref(x, S))


def test_constant_table_sliced_by_symbolic_length(rng):
    """The positional-table pattern: table[:S] + x for every S up to the table size."""
    table = randn(rng, (10, 4))

    def fn(x):
        return graphc.constant(table, name="pos")[:x.shape[0]] + x

    g = graphc.trace(fn, graphc.spec(("S", 4)))
    assert str(g.output_types[0]) == "f32[S,4]"
    exe = compile_traced(g)
    for S in (1, 4, 10):
        x = randn(rng, (S, 4))
        assert_close(exe(x), table[:S] + x)


def test_slice_between_two_symbols(rng):
    """cache[T:T+S]: bounds from two different inputs."""
    def fn(cache, x):
        T = cache.shape[0] - x.shape[0]
        return cache[T:] * x

    g = graphc.trace(fn, graphc.spec(("C", 3)), graphc.spec(("S", 3)))
    exe = compile_traced(g)
    cache, x = randn(rng, (7, 3)), randn(rng, (2, 3))
    assert_close(exe(cache, x), cache[5:] * x)


def test_trivial_index_records_no_node():
    g = graphc.trace(lambda t: t[:, ...] + t[...], graphc.spec(("S", 3)))
    assert "slice" not in g.op_counts()


def test_gather_rows_with_traced_and_constant_ids(rng):
    table = randn(rng, (10, 4))
    const_ids = np.array([3, 0, 4, 3])

    def fn(ids, x):
        return graphc.constant(table)[ids], x[const_ids], x[np.array(1)]

    g = graphc.trace(fn, graphc.spec(("S",), "int64"), graphc.spec((5, 4)))
    assert [str(t) for t in g.output_types] == ["f32[S,4]", "f32[4,4]", "f32[4]"]
    ids = rng.integers(0, 10, size=6)
    x = randn(rng, (5, 4))
    a, b, c = compile_traced(g)(ids, x)
    assert_close(a, table[ids])
    assert_close(b, x[const_ids])
    assert_close(c, x[1])
