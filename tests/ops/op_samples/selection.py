"""Op-matrix samples: index-dependent ops (masks, top-k) and the opaque model ops
(rope, moe) with their native kernels."""
import numpy as np

import graphc as G

from . import In, Sample

_inv_freq = (1.0 / 10000 ** (np.arange(0, 8, 2) / 8)).astype(np.float32)

SAMPLES = [
    Sample("causal_mask", lambda a: a + G.causal_mask(rows="S", cols="T"), [In(("S", "T"))]),
    Sample("causal_mask", lambda a: G.causal_mask(rows=4, cols=6, dtype="float64") + a,
           [In((4, 6), "float64")], "static"),
    Sample("topk", lambda a: G.topk(a, 3), [In(("S", 9))]),
    Sample("topk", lambda a: G.topk(a, 2, axis=0), [In((4, "S"), "float64")], "axis0"),
    Sample("rope", lambda a, p: G.rope(a, p, _inv_freq, scale=1.0),
           [In((2, "S", 8)), In(("S",), "int64", "index:64")]),
    Sample("moe", lambda a, w, i, gu, d: G.moe(a, w, i, gu, d),
           [In(("S", 6)), In(("S", 2), kind="positive"), In(("S", 2), "int64", "index:4"),
            In((4, 10, 6)), In((4, 6, 5))]),
]
