"""The textbook Transformer end to end on the Numba backend, and the errors a user of a
compiled executable can cause."""
import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.models import transformer
from numba_check import assert_close, randn, step_kinds

VOCAB = 97
SIZES = (1, 7, 130, 257)   # around the attention's 128-row query blocks


def config(**kw):
    return transformer.TransformerConfig(vocab_size=VOCAB, n_layers=2, max_len=300, **kw)


@pytest.fixture(scope="module", params=[False, True], ids=["bidirectional", "causal"])
def compiled(request):
    model = transformer.random(config(causal=request.param), seed=0)
    g = model.trace()
    return (model, graphc.compile(g, backend="numba"),
            graphc.compile(g, backend="reference", float64=True))


def test_model_matches_reference(compiled, rng):
    """One executable for every S; probabilities [S, vocab] in float32."""
    model, exe, ref = compiled
    for S in SIZES:
        ids = rng.integers(0, VOCAB, S)
        out = exe(ids)
        assert out.shape == (S, VOCAB) and out.dtype == np.float32
        assert_close(out, ref(ids), np.float32, what=f"S={S}")
        np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)
    kinds = step_kinds(exe)
    assert kinds.count("attention") == 2 and "library" not in kinds
    assert all(s.causal is model.config.causal for s in exe.program.steps
               if type(s).__name__ == "AttentionStep")


def test_model_kernels_shared_between_layers(compiled):
    """Both layers use the same kernels (content-named): few distinct compiles."""
    _, exe, _ = compiled
    assert len(exe.program.steps) > 2 * len(exe.kernels)


def test_model_call_reuses_executable(rng):
    """model(ids, backend="numba") compiles once; another S reuses the executable (one
    arena per size) and repeated calls give the same result."""
    model = transformer.random(config(), seed=1)
    a = rng.integers(0, VOCAB, 5)
    b = rng.integers(0, VOCAB, 9)
    first = model(a, backend="numba")
    (exe,) = model._compiled.values()
    functions = dict(exe.functions)
    second = model(b, backend="numba")
    assert list(model._compiled.values()) == [exe]
    assert exe.functions == functions
    assert first.shape == (5, VOCAB) and second.shape == (9, VOCAB)
    assert second.dtype == first.dtype == np.float32
    np.testing.assert_array_equal(model(a, backend="numba"), first)
    assert len(exe._sized) == 2
    ref = graphc.compile(model.trace(), backend="reference", float64=True)
    assert_close(second, ref(b), np.float32)


def test_per_size_state_is_bounded_least_recently_used_goes(rng):
    """An executable keeps the arenas of its max_sizes most recently used sizes; a size
    met again after its eviction is rebuilt and gives the same result."""
    model = transformer.random(config(), seed=1)
    exe = graphc.compile(model.trace(), backend="numba")
    exe.max_sizes = 3
    ids = {S: rng.integers(0, VOCAB, S) for S in (2, 3, 4, 5)}
    first = {S: exe(ids[S]) for S in (2, 3, 4)}
    exe(ids[2])                                  # 2 is now the most recently used
    exe(ids[5])                                  # evicts 3, the least recently used
    assert [k[0][1] for k in exe._sized] == [4, 2, 5]
    np.testing.assert_array_equal(exe(ids[3]), first[3])     # rebuilt: evicts 4
    assert [k[0][1] for k in exe._sized] == [2, 5, 3]


@pytest.mark.slow       # float64 numba kernels are checked op by op in the quick suite
def test_model_float64(rng):
    model = transformer.random(config(dtype="float64", causal=True), seed=2)
    g = model.trace()
    exe = graphc.compile(g, backend="numba")
    ref = graphc.compile(g, backend="reference", float64=True)
    for S in (3, 130):
        ids = rng.integers(0, VOCAB, S)
        out = exe(ids)
        assert out.dtype == np.float64
        assert_close(out, ref(ids), np.float64, what=f"S={S}")


# -- errors ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_exe():
    table = np.linspace(-1, 1, 40, dtype=np.float32).reshape(10, 4)
    g = graphc.trace(lambda x, ids: graphc.tanh(x) + graphc.embedding(table, ids),
                     spec(("S", 4)), spec(("S",), "int64"))
    return graphc.compile(g, backend="numba")


def test_wrong_dtype_is_input_error(small_exe, rng):
    with pytest.raises(graphc.InputError):
        small_exe(randn(rng, (3, 4), "float64"), np.arange(3))
    with pytest.raises(graphc.InputError):
        small_exe(randn(rng, (3, 4)), np.arange(3, dtype=np.float32))


def test_wrong_shape_is_input_error(small_exe, rng):
    with pytest.raises(graphc.InputError):
        small_exe(randn(rng, (3, 5)), np.arange(3))          # fixed dim 4
    with pytest.raises(graphc.InputError):
        small_exe(randn(rng, (3, 4, 1)), np.arange(3))       # rank
    with pytest.raises(graphc.InputError):
        small_exe(randn(rng, (3, 4)), np.arange(4))          # S bound to 3 and 4
    with pytest.raises(graphc.InputError):
        small_exe(randn(rng, (3, 4)))                        # missing input


@pytest.mark.parametrize("bad", [10, -1, 1000])
def test_embedding_id_out_of_range(small_exe, rng, bad):
    ids = np.array([0, bad, 2])
    with pytest.raises(graphc.GraphcError, match=str(bad)):
        small_exe(randn(rng, (3, 4)), ids)
    out = small_exe(randn(rng, (3, 4)), np.array([0, 9, 2]))   # still usable
    assert np.isfinite(out).all()


def test_model_id_out_of_range(compiled):
    _, exe, _ = compiled
    with pytest.raises(graphc.GraphcError, match=str(VOCAB)):
        exe(np.array([1, VOCAB, 2]))


@pytest.mark.parametrize("options", [{"fastmath_please": True}, {"float64": True},
                                     {"tile": 64}])
def test_unknown_option_is_backend_error(options):
    g = graphc.trace(lambda x: graphc.exp(x), spec(("S", 4)))
    with pytest.raises(graphc.BackendError, match="unknown option"):
        graphc.compile(g, backend="numba", **options)


def test_unknown_backend_is_backend_error():
    g = graphc.trace(lambda x: graphc.exp(x), spec(("S", 4)))
    with pytest.raises(graphc.BackendError):
        graphc.compile(g, backend="numbaa")
