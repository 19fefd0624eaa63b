"""Op-matrix samples: reductions and the row normalisations."""
import graphc as G

from . import In, Sample

x3 = In((3, "S", 5))
w5 = In((5,))

SAMPLES = [
    Sample("sum", lambda a: G.sum(a, axis=-1), [x3], "last"),
    Sample("sum", lambda a: G.sum(a, axis=(0, 2), keepdims=True), [x3], "axes"),
    Sample("sum", lambda a: G.sum(a, axis=1), [In((3, "S", 5), "int32")], "int32"),
    Sample("mean", lambda a: G.mean(a, axis=1), [x3]),
    Sample("mean", lambda a: G.mean(a), [In(("S", 4), "float64")], "all"),
    Sample("max", lambda a: G.max(a, axis=-1, keepdims=True), [x3]),
    Sample("max", lambda a: G.max(a, axis=0), [In((3, "S", 5), "int64")], "int64"),
    Sample("min", lambda a: G.min(a, axis=1), [x3]),
    Sample("min", lambda a: G.min(a, keepdims=True), [In((3, "S", 5), "float64")], "all"),
    Sample("min", lambda a: G.min(a, axis=(0, 2)), [In((3, "S", 5), "int32")], "int32"),
    Sample("argmax", lambda a: G.argmax(a, axis=-1), [x3]),
    Sample("argmax", lambda a: G.argmax(a, axis=1, keepdims=True), [In((3, "S", 5), "float64")],
           "axis1"),
    Sample("argmax", lambda a: G.argmax(a, axis=0), [In(("S", 7), "int32", "index:3")],
           "ties"),
    Sample("argmax", lambda a: G.argmax(a), [In((3, "S"))], "flat"),
    Sample("argmin", lambda a: G.argmin(a, axis=-1), [x3]),
    Sample("argmin", lambda a: G.argmin(a, axis=1), [In((4, "S"), "int64", "index:2")],
           "ties"),
    Sample("argmin", lambda a: G.argmin(a, axis=0, keepdims=True), [In(("S", 6), "float64")],
           "axis0"),
    Sample("cumsum", lambda a: G.cumsum(a, axis=-1), [x3]),
    Sample("cumsum", lambda a: G.cumsum(a, axis=1) * 0.5, [In((3, "S", 5), "float64")],
           "axis1"),
    Sample("cumsum", lambda a: G.cumsum(a, axis=0), [In(("S",))], "vector"),
    Sample("cumsum", lambda a: G.cumsum(a, axis=0), [In(("S", 4), "int32")], "int32"),
    Sample("cumsum", lambda a: G.cumsum(a + 1, axis=1), [In((2, "S"), "int64")], "int64"),
    Sample("softmax", lambda a: G.softmax(a, axis=-1), [x3]),
    Sample("softmax", lambda a: G.softmax(a, axis=1), [In((3, "S", 5), "float64")], "axis1"),
    Sample("layernorm", lambda a, w, b: G.layernorm(a, w, b, eps=1e-5), [x3, w5, w5]),
    Sample("rmsnorm", lambda a, w: G.rmsnorm(a, w, eps=1e-6), [x3, w5]),
]
