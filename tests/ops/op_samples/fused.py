"""Op-matrix samples: contractions and the ops rules introduce (attention, gemm,
add_layernorm), called directly."""
import math

import graphc as G
from graphc import ops as O

from . import In, Sample

SAMPLES = [
    Sample("matmul", lambda a, b: a @ b, [In(("S", 6)), In((6, 5))]),
    Sample("matmul", lambda a, b: a @ b, [In((3, "S", 6), "float64"), In((3, 6, "T"), "float64")],
           "batched"),
    Sample("gemm", lambda a, w, b: O.gemm(a, w, b, activation="gelu"),
           [In(("S", 6)), In((6, 5)), In((5,))]),
    Sample("attention", lambda q, k, v: O.attention(q, k, v, scale=1 / math.sqrt(8)),
           [In((2, "S", 8)), In((2, "T", 8)), In((2, "T", 8))]),
    Sample("attention", lambda q, k, v: O.attention(q, k, v, scale=0.3, causal=True),
           [In((2, "S", 8), "float64"), In((2, "T", 8), "float64"), In((2, "T", 8), "float64")],
           "causal"),
    Sample("attention", lambda q, k, v, m: O.attention(q, k, v, m, scale=0.9, softcap=1.5),
           [In((2, "S", 8)), In((2, "T", 8)), In((2, "T", 8)), In(("S", "T"), "bool", "bool")],
           "softcap"),
    Sample("add_layernorm", lambda a, r, w, b: O.add_layernorm(a, r, w, b, eps=1e-5),
           [In(("S", 6)), In(("S", 6)), In((6,)), In((6,))]),
]
