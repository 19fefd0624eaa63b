"""Ids out of range are an InputError on every backend, never a silent clamp: the ids of
embedding / take_along_axis stay a buffer (fuse keeps them out of the reading kernel) and
each call checks their range, whether they are a graph input or computed by the graph."""
import inspect

import numpy as np
import pytest

import graphc

BACKENDS = ["reference", "numba", "cupy-emu"]
rng = np.random.default_rng(7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_take_along_axis_ids_input(backend):
    exe = graphc.compile(graphc.trace(lambda x, i: graphc.take_along_axis(x, i, axis=1),
                                      graphc.spec(("B", "S")), graphc.spec(("B", 2), "int64")),
                         backend=backend)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    ok = np.array([[0, 4], [-5, 1], [2, -1]])               # NumPy's [-n, n)
    want = np.stack([x[r, [c % 5 for c in ok[r]]] for r in range(3)])
    np.testing.assert_array_equal(exe(x, ok), want)
    for bad, shown in ((5, "5"), (-6, "-6")):
        ids = ok.copy()
        ids[1, 0] = bad
        with pytest.raises(graphc.InputError, match=rf"index {shown} is out of range for "
                                                    r"axis 1 of size 5"):
            exe(x, ids)


@pytest.mark.parametrize("backend", BACKENDS)
def test_computed_ids_are_checked_too(backend):
    where = {}

    def fn(x, i):
        where["line"] = inspect.currentframe().f_lineno + 1
        return graphc.take_along_axis(x, i * 2, axis=1) + 1.0

    exe = graphc.compile(graphc.trace(fn, graphc.spec(("B", "S")),
                                      graphc.spec(("B", 2), "int64")), backend=backend)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    i = np.array([[0, 2], [1, 1], [2, 0]])
    np.testing.assert_allclose(exe(x, i), np.take_along_axis(x, i * 2, 1) + 1.0, rtol=1e-6)
    with pytest.raises(graphc.InputError, match="index 6 is out of range") as err:
        exe(x, np.array([[0, 3], [1, 1], [2, 0]]))
    assert err.value.loc is not None and err.value.loc.lineno == where["line"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_gather_of_argmax_runs(backend):
    exe = graphc.compile(graphc.trace(
        lambda x: x.gather(-1, x.argmax(dim=-1, keepdim=True)), graphc.spec(("B", "S"))),
        backend=backend)
    x = rng.standard_normal((4, 9)).astype(np.float32)
    np.testing.assert_array_equal(exe(x), x.max(-1, keepdims=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_of_computed_ids(backend):
    table = rng.standard_normal((10, 4)).astype(np.float32)
    exe = graphc.compile(graphc.trace(lambda ids: graphc.embedding(table, ids + 3),
                                      graphc.spec(("S",), "int64")), backend=backend)
    ids = np.array([0, 6, 2])
    np.testing.assert_array_equal(exe(ids), table[ids + 3])
    with pytest.raises(graphc.InputError, match="id 10 is out of range for a table of 10"):
        exe(np.array([1, 7]))
