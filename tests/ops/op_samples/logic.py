"""Op-matrix samples: comparisons (bool results) and logic on bool tensors."""
import graphc as G

from . import In, Sample

# Small integer values stored as floats: equal entries are common, so == and <= are
# exercised on ties as well as on strict orderings.
xi = In(("S", 7), "float32", "ints")
rowi = In((7,), "float32", "ints")
x64 = In(("S", 7), "float64", "ints")
i32 = In(("S", 7), "int32")
i64 = In(("S", 7), "int64")
b = In(("S", 7), "bool", "bool")
brow = In((7,), "bool", "bool")
bcol = In(("S", 1), "bool", "bool")

SAMPLES = [
    Sample("equal", lambda a, c: G.equal(a, c), [xi, rowi]),
    Sample("equal", lambda a, c: G.equal(a, c), [i32, In((1, 7), "int32")], "int32"),
    Sample("equal", lambda a, c: G.equal(a, c), [b, brow], "bool"),
    Sample("equal", lambda a: a == 1.0, [xi], "scalar"),
    Sample("not_equal", lambda a, c: G.not_equal(a, c), [x64, x64]),
    Sample("not_equal", lambda a, c: G.not_equal(a, c), [i64, i64], "int64"),
    Sample("not_equal", lambda a, c: G.not_equal(a, c), [b, bcol], "bool"),
    Sample("less_equal", lambda a, c: G.less_equal(a, c), [xi, In(("S", 1), "float32",
                                                                   "ints")]),
    Sample("less_equal", lambda a, c: G.less_equal(a, c), [i64, i64], "int64"),
    Sample("less_equal", lambda a: a <= 2, [i32], "scalar-int32"),
    Sample("greater_equal", lambda a, c: G.greater_equal(a, c), [x64, In((7,), "float64",
                                                                         "ints")]),
    Sample("greater_equal", lambda a, c: G.greater_equal(a, c), [i32, i32], "int32"),
    Sample("logical_and", lambda a, c: G.logical_and(a, c), [b, brow]),
    Sample("logical_and", lambda a, c: (a > 0) & (c < 0), [xi, rowi], "compares"),
    Sample("logical_or", lambda a, c: G.logical_or(a, c), [b, bcol]),
    Sample("logical_or", lambda a: a | True, [b], "scalar"),
    Sample("logical_xor", lambda a, c: G.logical_xor(a, c), [b, b]),
    Sample("logical_not", lambda a: G.logical_not(a), [b]),
    Sample("logical_not", lambda a: ~(a == 2), [i64], "of-compare"),
    Sample("where", lambda a, c: G.where(a == c, a, 0.0), [xi, rowi], "of-compare"),
    Sample("where", lambda m, a, c: G.where(m, a, c), [brow, b, bcol], "bool-branches"),
    Sample("less", lambda a: a < 0.5, [i64], "int-float-scalar"),
    Sample("logical_or", lambda a, c: a + c, [b, brow], "bool-add"),
    Sample("logical_and", lambda a, c: a * c, [b, bcol], "bool-mul"),
    Sample("mul", lambda a, ids: a * (ids == 0), [In(("S", 7)), In(("S", 7), "int64",
                                                                   "index:3")],
           "bool-mask"),
]
