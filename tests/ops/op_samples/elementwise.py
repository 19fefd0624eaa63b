"""Op-matrix samples: elementwise ops (arithmetic, comparisons, math, casts)."""
import graphc as G

from . import In, Sample

x = In(("S", 7))
row = In((7,))
x64 = In(("S", 7), "float64")
i32 = In(("S", 7), "int32")
i64 = In(("S", 7), "int64")

SAMPLES = [
    Sample("add", lambda a, b: G.add(a, b), [x, row], "broadcast"),
    Sample("add", lambda a, b: G.add(a, b), [i32, i32], "int32"),
    Sample("sub", lambda a, b: G.sub(a, b), [x64, In((7,), "float64")], "float64"),
    Sample("sub", lambda a, b: G.sub(a, b), [i64, In((1, 7), "int64")], "int64"),
    Sample("mul", lambda a, b: G.mul(a, b), [x, In(("S", 1))], "column"),
    Sample("mul", lambda a, b: G.mul(a, b), [i64, i64], "int64"),
    Sample("div", lambda a, b: G.div(a, b), [x, In(("S", 7), kind="nonzero")]),
    Sample("div", lambda a, b: G.div(a, b), [i32, In(("S", 7), "int32", "nonzero")],
           "int-floor"),
    Sample("maximum", lambda a, b: G.maximum(a, b), [x, row]),
    Sample("maximum", lambda a, b: G.maximum(a, b), [i64, i64], "int64"),
    Sample("minimum", lambda a, b: G.minimum(a, b), [x64, x64]),
    Sample("less", lambda a, b: G.less(a, b), [x, row]),
    Sample("less", lambda a, b: G.less(a, b), [i32, i32], "int32"),
    Sample("greater", lambda a, b: G.greater(a, b), [x, x]),
    Sample("where", lambda c, a, b: G.where(c, a, b), [In(("S", 7), "bool", "bool"), x, row]),
    Sample("where", lambda c, a, b: G.where(c, a, b), [In((7,), "bool", "bool"), i64, i64],
           "int64"),
    Sample("neg", lambda a: G.neg(a), [x]),
    Sample("neg", lambda a: G.neg(a), [i32], "int32"),
    Sample("exp", lambda a: G.exp(a), [x]),
    Sample("exp", lambda a: G.exp(a), [x64], "float64"),
    Sample("log", lambda a: G.log(a), [In(("S", 7), kind="positive")]),
    Sample("sqrt", lambda a: G.sqrt(a), [In(("S", 7), kind="positive")]),
    Sample("rsqrt", lambda a: G.rsqrt(a), [In(("S", 7), "float64", "positive")]),
    Sample("tanh", lambda a: G.tanh(a), [x]),
    Sample("sigmoid", lambda a: G.sigmoid(a), [x]),
    Sample("erf", lambda a: G.erf(a), [x]),
    Sample("relu", lambda a: G.relu(a), [x]),
    Sample("gelu", lambda a: G.gelu(a), [x]),
    Sample("gelu", lambda a: G.gelu(a, approximate="tanh"), [x64], "tanh"),
    Sample("silu", lambda a: G.silu(a), [x]),
    Sample("scale", lambda a: G.scale(a, 0.37), [x]),
    Sample("cast", lambda a: G.cast(a, "float64"), [x], "to-float64"),
    Sample("cast", lambda a: G.cast(a, "float32"), [i64], "int-to-float"),
    Sample("cast", lambda a: G.cast(G.scale(a, 3.0), "int32"), [x], "float-to-int"),
    Sample("cast", lambda a: G.cast(a, "int64"), [In(("S", 7), "bool", "bool")], "bool"),
]
