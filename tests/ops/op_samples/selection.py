"""Op-matrix samples: index-dependent ops (masks, arange, triangles, top-k, sort,
index_put) and the opaque model ops (moe, grouped_matmul) with their native kernels."""
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
    # sort: values and indices, both orders, ints and bools (ties keep their order)
    Sample("sort", lambda a: G.sort(a), [In(("S", 9))]),
    Sample("sort", lambda a: G.sort(a, axis=0, descending=True), [In(("S", 4), "int64")],
           "desc-int"),
    Sample("sort", lambda a: G.sort(a, descending=True)[1], [In((3, "S"), "bool", "bool")],
           "bool"),
    # index_put: repeated rows (the last write wins; accumulate adds them up)
    Sample("index_put", lambda a, i, v: G.index_put(a, v, i),
           [In(("T", 4)), In(("S",), "int64", "index:3"), In(("S", 4))]),
    Sample("index_put", lambda a, i, j, v: G.index_put(a, v, i, j, accumulate=True),
           [In(("T", 5), "float64"), In(("S",), "int64", "index:3"),
            In(("S",), "int64", "index:5"), In(("S",), "float64")], "accumulate"),
    # grouped_matmul: offsets counted from group ids (ids == 4 fall past the last offset)
    Sample("grouped_matmul", lambda a, i, w: G.grouped_matmul(a, w, _offsets(i, 4)),
           [In(("S", 6)), In(("S",), "int64", "index:5"), In((4, 6, 5))]),
    Sample("grouped_matmul",
           lambda a, i, w: G.grouped_matmul(a, w, _offsets(i, 3), transpose_w=True),
           [In(("S", 6), "float64"), In(("S",), "int64", "index:3"), In((3, 7, 6), "float64")],
           "transposed"),
]


def _offsets(ids, groups):
    """Cumulative counts of ids <= e for e < groups (non-decreasing, within the rows)."""
    le = G.less_equal(G.reshape(ids, shape=(ids.shape[0], 1)),
                      G.reshape(G.arange(groups), shape=(1, groups)))
    return G.sum(G.cast(le, dtype="int64"), axis=0)
