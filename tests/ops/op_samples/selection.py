"""Op-matrix samples: index-dependent ops (masks, arange, triangles, top-k) and the opaque
model ops (moe) with their native kernels."""
import graphc as G

from . import In, Sample

SAMPLES = [
    Sample("causal_mask", lambda a: a + G.causal_mask(rows="S", cols="T"), [In(("S", "T"))]),
    Sample("causal_mask", lambda a: G.causal_mask(rows=4, cols=6, dtype="float64") + a,
           [In((4, 6), "float64")], "static"),
    # arange: symbolic and static bounds, steps, int and float dtypes
    Sample("arange", lambda a: a + G.arange(a.shape[1], dtype="float32"), [In((3, "S"))]),
    Sample("arange", lambda a: a * G.arange(2, a.shape[0] + 2), [In(("S",), "int64")],
           "start"),
    Sample("arange", lambda a: a - G.arange(10, 1, -3, dtype="int32"), [In((3,), "int32")],
           "negstep"),
    Sample("arange", lambda a: a + G.arange(1, 2 * a.shape[1] + 1, 2, dtype="float64"),
           [In((2, "S"), "float64")], "step2"),
    Sample("arange", lambda a: G.arange(a.shape[0], a.shape[1], dtype="float32") + G.sum(a),
           [In(("S", "T"))], "symrange"),
    # triu / tril: batch dims, non-square, diagonals, ints and bools
    Sample("triu", lambda a: G.triu(a), [In(("S", "T"))]),
    Sample("triu", lambda a: G.triu(a, k=-1) * 2.0, [In((2, "S", 7), "float64")], "batch"),
    Sample("triu", lambda a: G.triu(a, k=2), [In((3, "S"), "int32")], "int32"),
    Sample("tril", lambda a: G.tril(a), [In(("S", 5))]),
    Sample("tril", lambda a: G.tril(a, k=1), [In((2, 3, "S", 4), "int64")], "int64"),
    Sample("tril", lambda a: G.tril(a, k=-2), [In(("T", "S"), "bool", "bool")], "bool"),
    Sample("topk", lambda a: G.topk(a, 3), [In(("S", 9))]),
    Sample("topk", lambda a: G.topk(a, 2, axis=0), [In((4, "S"), "float64")], "axis0"),
    Sample("moe", lambda a, w, i, gu, d: G.moe(a, w, i, gu, d),
           [In(("S", 6)), In(("S", 2), kind="positive"), In(("S", 2), "int64", "index:4"),
            In((4, 10, 6)), In((4, 6, 5))]),
]
