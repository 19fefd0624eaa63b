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
    Sample("broadcast_to", lambda a: G.broadcast_to(a, ("S", 4, 6)) * 2.0,
           [In(("S", 1, 6))]),
    Sample("broadcast_to", lambda a: G.broadcast_to(a, (3, a.shape[0], 5)),
           [In(("S", 5))], "new_dims"),
    Sample("broadcast_to", lambda a: a.expand(2, 3, a.shape[1]), [In((1, "T"), "bool")],
           "bool"),
    Sample("broadcast_to", lambda a, b: a.expand_as(b) - b, [In((3,), "int64"),
                                                             In(("S", 3), "int64")], "int64"),
    Sample("repeat", lambda a: G.repeat(a, 3, axis=1) * 2.0, [x3]),
    Sample("repeat", lambda a: G.repeat(a, 2, axis=0) + 1.0, [x3], "symbolic_axis"),
    Sample("repeat", lambda a: a.repeat_interleave(3, dim=-1), [In(("S", 5), "int64")],
           "int64"),
    Sample("repeat", lambda a: G.repeat(a, 2), [In((3, "S"), "bool")], "flat_bool"),
    Sample("take_along_axis", lambda a, i: G.take_along_axis(a, i, axis=-1) * 2.0,
           [x3, In(("S", 4, 3), "int64", "index:6")]),
    Sample("take_along_axis", lambda a, i: G.take_along_axis(a, i, 0),
           [In((5, "S")), In((3, "S"), "int32", "index:5")], "axis0_int32"),
    Sample("take_along_axis", lambda a, i: a.gather(2, i) + 1.0,
           [In(("S", 1, 5)), In((1, 3, 7), "int64", "index:5")], "broadcast"),
    Sample("take_along_axis", lambda a, i: G.take_along_axis(a, i, axis=1),
           [In((4, 7), "bool"), In((4, 2), "int32", "index:7")], "bool"),
    Sample("reshape", lambda a: G.squeeze(a, 1) * 2.0, [In(("S", 1, 6))], "squeeze"),
    Sample("reshape", lambda a: G.unsqueeze(a, -1) + a[..., None], [In(("S", 5), "int64")],
           "unsqueeze"),
]
