"""rope on the reference backend against a NumPy computation written here (complex
multiplication of interleaved pairs, as the DeepSeek/transformers code defines it)."""
import numpy as np
import pytest

import graphc
from graphc import spec
from opcheck import FLOATS, assert_reported_at, check, concrete, next_line, randn


def _rope_complex(x, pos, inv_freq, scale):
    """Pairs (x[2i], x[2i+1]) as complex numbers times scale * e^(i pos inv_freq_i)."""
    z = x[..., 0::2] + 1j * x[..., 1::2]
    rot = scale * np.exp(1j * np.outer(pos.astype(np.float64), inv_freq))
    w = z * rot
    out = np.empty(x.shape, np.float64)
    out[..., 0::2], out[..., 1::2] = w.real, w.imag
    return out


SHAPES = [(("S", 4), 1.0), ((3, "S", 8), 1.0), ((2, 3, "S", 2), 0.75), (("S", 32), 1.3)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,scale", SHAPES, ids=str)
def test_rope_matches_complex_rotation(shape, scale, dtype, rng):
    d = shape[-1]
    inv = (10000.0 ** (-np.arange(0, d, 2) / d)).astype(dtype)
    cases = []
    for n in (1, 6):
        x = randn(rng, concrete(shape, {"S": n}), dtype)
        pos = rng.permutation(50)[:n].astype(np.int64)       # any positions, any order
        cases.append((x, pos))
    check(lambda x, p: graphc.rope(x, p, inv, scale=scale),
          [spec(shape, dtype), spec(("S",), "int64")], cases,
          lambda x, p: _rope_complex(x, p, inv.astype(np.float64), scale))


def test_rope_position_zero_is_identity_and_norm_preserved(rng):
    x = randn(rng, (5, 16), "float64")
    inv = rng.uniform(0.01, 1.0, 8)
    np.testing.assert_array_equal(graphc.rope(x, np.zeros(5, np.int64), inv), x)
    y = graphc.rope(x, np.arange(5), inv)
    # A rotation keeps the length of every pair.
    np.testing.assert_allclose(np.hypot(y[:, 0::2], y[:, 1::2]),
                               np.hypot(x[:, 0::2], x[:, 1::2]), rtol=1e-12)


def test_rope_errors_name_the_line():
    inv = np.ones(2, np.float32)

    def odd(x, p):
        return graphc.rope(x, p, np.ones(3, np.float32))
    with pytest.raises(graphc.ShapeError, match="even") as e:
        graphc.trace(odd, spec(("S", 5)), spec(("S",), "int64"))
    assert_reported_at(e.value, f"{odd.__code__.co_filename}:{odd.__code__.co_firstlineno + 1}",
                       "rope")

    def wrong_pos(x, p):
        return graphc.rope(x, p, inv)
    with pytest.raises(graphc.ShapeError, match="positions"):
        graphc.trace(wrong_pos, spec(("S", 4)), spec(("T",), "int64"))
    with pytest.raises(graphc.DTypeError, match="positions"):
        graphc.trace(wrong_pos, spec(("S", 4)), spec(("S",), "float32"))
    with pytest.raises(graphc.ShapeError, match="inv_freq"):
        graphc.trace(lambda x, p: graphc.rope(x, p, np.ones(4, np.float32)),
                     spec(("S", 4)), spec(("S",), "int64"))
    with pytest.raises(graphc.DTypeError):
        graphc.trace(lambda x, p: graphc.rope(x, p, np.ones(2, np.float64)),
                     spec(("S", 4)), spec(("S",), "int64"))
    with pytest.raises(graphc.AttrError, match="scale") as e:
        at = next_line()
        graphc.trace(lambda x, p: graphc.rope(x, p, inv, scale="big"), spec(("S", 4)), spec(("S",), "int64"))  # noqa: E501
    assert_reported_at(e.value, at, "rope")
