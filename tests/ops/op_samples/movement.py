"""Op-matrix samples: movement ops (each fused with an elementwise consumer, so the
compiled backends lower it through its index mapping, and alone)."""
import graphc as G

from . import In, Sample

x3 = In(("S", 4, 6))

SAMPLES = [
    Sample("reshape", lambda a: G.reshape(a, shape=("S", 24)) * 2.0, [x3]),
    Sample("reshape", lambda a: G.reshape(a, shape=(-1, 2, 3)), [x3], "split"),
    Sample("transpose", lambda a: G.transpose(a, axes=(2, 0, 1)) + 1.0, [x3]),
    Sample("transpose", lambda a: G.transpose(a), [In(("S", 3), "int64")], "int64"),
    Sample("slice", lambda a: a[:, 1:4, ::2] * 3.0, [x3]),
    Sample("slice", lambda a: a[1:], [In(("T", 5))], "symbolic"),
    Sample("concat", lambda a, b: G.concat([a, b], axis=1) - 1.0, [x3, In(("S", 2, 6))]),
    Sample("concat", lambda a, b: G.concat([a, b], axis=0), [In(("S", 3)), In(("T", 3))],
           "symbolic"),
    Sample("embedding", lambda t, i: G.embedding(t, i) * 2.0,
           [In((11, 6)), In(("S",), "int64", "index:11")]),
    Sample("embedding", lambda t, i: G.embedding(t, i),
           [In((5, 3)), In((2, "S"), "int32", "index:5")], "int32"),
]
