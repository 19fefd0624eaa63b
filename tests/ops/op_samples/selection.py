"""Op-matrix samples: index-dependent ops (masks, top-k) and the opaque model ops
(moe) with their native kernels."""
import graphc as G

from . import In, Sample

SAMPLES = [
    Sample("causal_mask", lambda a: a + G.causal_mask(rows="S", cols="T"), [In(("S", "T"))]),
    Sample("causal_mask", lambda a: G.causal_mask(rows=4, cols=6, dtype="float64") + a,
           [In((4, 6), "float64")], "static"),
    Sample("topk", lambda a: G.topk(a, 3), [In(("S", 9))]),
    Sample("topk", lambda a: G.topk(a, 2, axis=0), [In((4, "S"), "float64")], "axis0"),
    Sample("moe", lambda a, w, i, gu, d: G.moe(a, w, i, gu, d),
           [In(("S", 6)), In(("S", 2), kind="positive"), In(("S", 2), "int64", "index:4"),
            In((4, 10, 6)), In((4, 6, 5))]),
]
