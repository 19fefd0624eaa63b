"""Op-matrix samples: rotary position embeddings (both layouts, positions [S], [B, S] and
[1, S], partial rotary with an odd head dim, float32 and float64, int32 and int64
positions)."""
import numpy as np

import graphc as G

from . import In, Sample


def _inv(r, dtype):
    return (1.0 / 10000 ** (np.arange(0, r, 2) / r)).astype(dtype)


def _rope(dtype, *, r, **attrs):
    inv = _inv(r, dtype)
    return lambda a, p: G.rope(a, p, inv, **attrs)


SAMPLES = [
    Sample("rope", _rope("float32", r=8, scale=1.0),
           [In((2, "S", 8)), In(("S",), "int64", "index:64")]),
    Sample("rope", _rope("float64", r=8, scale=0.9, layout="half"),
           [In((2, 3, "S", 8), "float64"), In(("S",), "int32", "index:64")],
           name="half-f64"),
    Sample("rope", _rope("float32", r=8, scale=1.1),
           [In((2, 3, "S", 8)), In((2, "S"), "int64", "index:64")], name="batch-pos"),
    Sample("rope", _rope("float32", r=6, layout="half"),
           [In((2, 3, "S", 6)), In((2, "S"), "int32", "index:64")], name="half-batch-pos"),
    Sample("rope", _rope("float64", r=8, layout="half", rotary_dim=8),
           [In((3, "S", 10), "float64"), In((3, "S"), "int64", "index:64")],
           name="half-partial-f64"),
    Sample("rope", _rope("float32", r=4, layout="half", rotary_dim=4, scale=1.2),
           [In((2, 2, "S", 7)), In(("S",), "int64", "index:64")], name="half-partial-odd"),
    Sample("rope", _rope("float64", r=4, rotary_dim=4),
           [In((3, "S", 7), "float64"), In((1, "S"), "int64", "index:64")],
           name="partial-odd-pos1-f64"),
    Sample("rope", _rope("float32", r=6, rotary_dim=6),
           [In((2, 2, "S", 10)), In((2, "S"), "int32", "index:64")],
           name="partial-batch-pos"),
]
