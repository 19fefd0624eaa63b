"""Every registered op through the Numba backend, against the float64 reference.

Small shapes with a symbolic dim ``S`` (bound to a few sizes per compiled executable),
float32 throughout and float64 for a few ops. Elementwise ops are compiled at ``O0`` so
the op itself reaches the backend (``O2`` decomposes gelu/silu; those forms are checked
too). That every registered op runs on numba is the op matrix's job
(tests/ops/test_op_matrix.py); these cases add what it does not show.
"""
import math

import numpy as np
import pytest

import graphc
from graphc import spec
from numba_check import (body_ops, check_fn, check_graph, ints, kernel_sources,
                         nonzero, positive, randn, step_kinds)

SIZES = (1, 5)          # values of S each executable runs with


# The op matrix (tests/ops/test_op_matrix.py) runs every op on numba in the quick suite;
# the per-op sweeps here (a Numba compile each, ~1 CPU s) are in the slow run. The quick
# suite keeps what the matrix does not show: decompositions, epilogues, fused graphs,
# the library kernels, attention.


def slow(*values):
    """A parametrisation in the slow suite only."""
    return pytest.param(*values, marks=pytest.mark.slow)

# -- elementwise: binary ---------------------------------------------------------------

BINARY = ["add", "sub", "mul", "div", "maximum", "minimum"]


def _binary_cases(rng, op, dtype):
    def rhs(shape):
        if op == "div":
            return nonzero(rng, shape, dtype)
        return ints(rng, shape, dtype) if dtype.startswith("int") else randn(rng, shape, dtype)
    lhs = (lambda s: ints(rng, s, dtype)) if dtype.startswith("int") else \
        (lambda s: randn(rng, s, dtype))
    return [(lhs((S, 1, 4)), rhs((3, 4))) for S in SIZES]


@pytest.mark.slow
@pytest.mark.parametrize("op,dtype", [(op, "float32") if op in ("add", "div") else
                                     slow(op, "float32") for op in BINARY]
                         + [("add", "float64"), slow("div", "float64"), ("mul", "int64"),
                            slow("div", "int64")])
def test_binary(op, dtype, rng):
    """[S, 1, 4] op [3, 4] -> [S, 3, 4] (broadcast on both sides)."""
    fn = getattr(graphc, op)
    exe = check_fn(lambda a, b: fn(a, b), [spec(("S", 1, 4), dtype), spec((3, 4), dtype)],
                   _binary_cases(rng, op, dtype))
    assert op in body_ops(exe)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["div", "neg"])
def test_int32(op, rng):
    """int32 arithmetic stays int32; div floors like NumPy (negative operands)."""
    fn = getattr(graphc, op)
    if op == "neg":
        exe = check_fn(lambda a: fn(a), [spec(("S", 4), "int32")],
                       [(ints(rng, (S, 4), "int32"),) for S in SIZES])
    else:
        exe = check_fn(lambda a, b: fn(a, b), [spec(("S", 4), "int32"), spec((4,), "int32")],
                       [(ints(rng, (S, 4), "int32"), nonzero(rng, (4,), "int32"))
                        for S in SIZES])
    assert op in body_ops(exe)


@pytest.mark.slow
@pytest.mark.parametrize("op,dtype", [("less", "float32"), ("greater", "int64")])
def test_compare(op, dtype, rng):
    fn = getattr(graphc, op)
    data = (lambda s: ints(rng, s, dtype, -3, 4)) if dtype == "int64" else \
        (lambda s: randn(rng, s, dtype))
    exe = check_fn(lambda a, b: fn(a, b), [spec(("S", 4), dtype), spec((4,), dtype)],
                   [(data((S, 4)), data((4,))) for S in SIZES])
    assert op in body_ops(exe)
    assert exe.graph.output_types[0].dtype == "bool"


def test_where(rng):
    """A bool condition [S, 1] picks between [S, 4] and [4]."""
    exe = check_fn(lambda c, a, b: graphc.where(graphc.greater(c, 0.0), a, b),
                   [spec(("S", 1)), spec(("S", 4)), spec((4,))],
                   [(randn(rng, (S, 1)), randn(rng, (S, 4)), randn(rng, (4,)))
                    for S in SIZES])
    assert {"where", "greater"} <= body_ops(exe)


# -- elementwise: unary ----------------------------------------------------------------

def _gelu_tanh(x):
    return graphc.gelu(x, approximate="tanh")


UNARY = {  # name -> (traced function, input maker)
    "neg": (graphc.neg, randn),
    "exp": (graphc.exp, randn),
    "log": (graphc.log, positive),
    "sqrt": (graphc.sqrt, positive),
    "rsqrt": (graphc.rsqrt, positive),
    "tanh": (graphc.tanh, randn),
    "sigmoid": (graphc.sigmoid, lambda rng, s, dt: randn(rng, s, dt, scale=20.0)),
    "erf": (graphc.erf, randn),
    "relu": (graphc.relu, randn),
    "gelu": (graphc.gelu, lambda rng, s, dt: randn(rng, s, dt, scale=3.0)),
    "gelu_tanh": (_gelu_tanh, lambda rng, s, dt: randn(rng, s, dt, scale=3.0)),
    "silu": (graphc.silu, lambda rng, s, dt: randn(rng, s, dt, scale=5.0)),
    "scale": (lambda x: graphc.scale(x, 0.3), randn),
}
UNARY_F64 = ["exp", "erf", "gelu"]


UNARY_QUICK = ["exp", "tanh", "sigmoid", "erf", "gelu", "gelu_tanh", "silu"]


@pytest.mark.slow
@pytest.mark.parametrize("dtype,name", [("float32", n) if n in UNARY_QUICK else
                                        slow("float32", n) for n in UNARY]
                         + [slow("float64", n) for n in UNARY_F64])
def test_unary(name, dtype, rng):
    """The op itself (level O0: no decomposition of gelu/silu) on [S, 4]."""
    fn, make = UNARY[name]
    exe = check_fn(lambda x: fn(x), [spec(("S", 4), dtype)],
                   [(make(rng, (S, 4), dtype),) for S in SIZES], level="O0")
    assert name.split("_")[0] in body_ops(exe)


@pytest.mark.parametrize("name", ["gelu_tanh", "silu"])
def test_decomposed_at_o2(name, rng):
    """At O2 gelu and silu reach the backend as their decompositions."""
    fn, make = UNARY[name]
    exe = check_fn(lambda x: fn(x), [spec(("S", 4))],
                   [(make(rng, (S, 4), "float32"),) for S in SIZES])
    assert not {"gelu", "silu"} & body_ops(exe)


CASTS = [("float32", "int64"), ("int32", "float32"), ("float32", "float64"),
         ("float32", "bool"), ("bool", "float32")]


@pytest.mark.slow
@pytest.mark.parametrize("src,dst", CASTS)
def test_cast(src, dst, rng):
    """Float -> int truncates towards zero like NumPy (negative values included)."""
    def make(S):
        if src == "bool":
            return rng.random((S, 4)) < 0.5
        if src.startswith("int"):
            return ints(rng, (S, 4), src)
        return randn(rng, (S, 4), src, scale=4.0)
    exe = check_fn(lambda x: graphc.cast(x, dtype=dst), [spec(("S", 4), src)],
                   [(make(S),) for S in SIZES])
    assert "cast" in body_ops(exe)


@pytest.mark.parametrize("dtype", ["float32"])
def test_causal_mask(dtype, rng):
    """x [S, T] + causal_mask(S, T): -inf exactly above the bottom-right diagonal."""
    exe = check_fn(lambda x: x + graphc.causal_mask(x.shape[0], x.shape[1], dtype=dtype),
                   [spec(("S", "T"), dtype)],
                   [(randn(rng, (S, T), dtype),) for S, T in ((1, 1), (3, 3), (2, 5))])
    assert "causal_mask" in body_ops(exe)
    out = exe(randn(rng, (2, 4), dtype))
    assert np.isneginf(out[0, 3]) and np.isfinite(out[0, 2])


# -- reductions ------------------------------------------------------------------------

REDUCE_CASES = [  # (op, axis, keepdims): each op over the last axis, a leading one, a middle
    # one, several and all, with and without keepdims
    ("sum", -1, False), ("sum", 0, True), ("sum", (0, 2), False),
    ("mean", -1, True), slow("mean", (0, 2), True),
    ("max", -1, False), slow("max", 0, False), ("max", 1, True), slow("max", None, True)]


@pytest.mark.slow
@pytest.mark.parametrize("op,axis,keepdims", REDUCE_CASES)
def test_reduce(op, axis, keepdims, rng):
    fn = getattr(graphc, op)
    exe = check_fn(lambda x: fn(x, axis=axis, keepdims=keepdims), [spec(("S", 3, 4))],
                   [(randn(rng, (S, 3, 4)),) for S in SIZES])
    assert op in body_ops(exe)


@pytest.mark.slow
@pytest.mark.parametrize("op,dtype", [("sum", "float64"), ("sum", "int64"), ("max", "int32")])
def test_reduce_dtypes(op, dtype, rng):
    make = ints if dtype.startswith("int") else randn
    exe = check_fn(lambda x: getattr(graphc, op)(x, axis=0), [spec(("S", 4), dtype)],
                   [(make(rng, (S, 4), dtype),) for S in SIZES])
    assert op in body_ops(exe)


@pytest.mark.slow
@pytest.mark.parametrize("axis,dtype", [(0, "float32"), (-1, "float32"), (-1, "float64")])
def test_softmax(axis, dtype, rng):
    exe = check_fn(lambda x: graphc.softmax(x, axis=axis), [spec(("S", 3, 4), dtype)],
                   [(randn(rng, (S, 3, 4), dtype, scale=3.0),) for S in SIZES])
    assert "softmax" in body_ops(exe)


@pytest.mark.slow
@pytest.mark.parametrize("op,dtype", [("layernorm", "float32"), ("rmsnorm", "float32"),
                                      ("add_layernorm", "float32"), ("layernorm", "float64")])
def test_norms(op, dtype, rng):
    C = 8
    w, b = randn(rng, (C,), dtype), randn(rng, (C,), dtype)
    if op == "layernorm":
        fn, specs = (lambda x: graphc.layernorm(x, w, b, eps=1e-5)), [spec(("S", C), dtype)]
    elif op == "rmsnorm":
        fn, specs = (lambda x: graphc.rmsnorm(x, w, eps=1e-6)), [spec(("S", C), dtype)]
    else:
        fn = lambda x, r: graphc.ops.add_layernorm(x, r, w, b, eps=1e-5)  # noqa: E731
        specs = [spec(("S", C), dtype), spec(("S", C), dtype)]
    cases = [tuple(randn(rng, (S, C), dtype, scale=2.0) + 0.5 for _ in specs) for S in SIZES]
    exe = check_fn(fn, specs, cases)
    assert op in body_ops(exe)


# -- contractions ----------------------------------------------------------------------

MATMULS = {  # name -> (a spec shape, b spec shape)
    "2d": (("S", 8), (8, 6)),
    "batched": ((2, "S", 8), (2, 8, 6)),
    "broadcast_b": ((2, "S", 8), (8, 6)),
    "vector": ((8,), (8, "S")),
}


@pytest.mark.parametrize("dtype", ["float32", slow("float64")])
@pytest.mark.parametrize("case", sorted(MATMULS))
def test_matmul(case, dtype, rng):
    sa, sb = MATMULS[case]
    exe = check_fn(lambda a, b: a @ b, [spec(sa, dtype), spec(sb, dtype)],
                   [(randn(rng, tuple(S if d == "S" else d for d in sa), dtype),
                     randn(rng, tuple(S if d == "S" else d for d in sb), dtype))
                    for S in SIZES])
    assert "matmul" in body_ops(exe) and step_kinds(exe) == ["gemm"]


@pytest.mark.parametrize("activation,dtype", [(a, "float32") for a in
                                              ("none", "relu", "gelu", "gelu_tanh", "silu")]
                         + [("relu", "float64")])
def test_gemm(activation, dtype, rng):
    """graphc.ops.gemm itself: BLAS then the bias + activation epilogue kernel."""
    w, b = randn(rng, (8, 6), dtype), randn(rng, (6,), dtype)
    exe = check_fn(lambda x: graphc.ops.gemm(x, w, b, activation=activation),
                   [spec(("S", 8), dtype)],
                   [(randn(rng, (S, 8), dtype),) for S in SIZES])
    assert "gemm" in body_ops(exe) and step_kinds(exe) == ["gemm"]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", ["float32", slow("float64")])
def test_attention_op(causal, dtype, rng):
    """graphc.ops.attention: the blockwise template; decode-like S < T when causal."""
    d = 8
    exe = check_fn(lambda q, k, v: graphc.ops.attention(q, k, v, scale=1 / math.sqrt(d),
                                                        causal=causal),
                   [spec((2, "S", d), dtype), spec((2, "T", d), dtype),
                    spec((2, "T", 6), dtype)],
                   [(randn(rng, (2, S, d), dtype), randn(rng, (2, T, d), dtype),
                     randn(rng, (2, T, 6), dtype)) for S, T in ((1, 1), (3, 3), (2, 7))])
    assert step_kinds(exe) == ["attention"]


# -- movement --------------------------------------------------------------------------

@pytest.mark.slow
def test_reshape(rng):
    exe = check_fn(lambda x: x.reshape(x.shape[0] * 2, 3) * 2.0, [spec(("S", 6))],
                   [(randn(rng, (S, 6)),) for S in SIZES])
    assert "reshape" in body_ops(exe)


def test_reshape_alone(rng):
    """A reshape that is the graph output (a movement-only group)."""
    exe = check_fn(lambda x: x.reshape(x.shape[0], 2, 3), [spec(("S", 6))],
                   [(randn(rng, (S, 6)),) for S in SIZES])
    assert "reshape" in body_ops(exe)


@pytest.mark.slow
@pytest.mark.parametrize("axes", [(1, 0, 2), (2, 0, 1)])
def test_transpose(axes, rng):
    exe = check_fn(lambda x: x.transpose(*axes), [spec(("S", 3, 4))],
                   [(randn(rng, (S, 3, 4)),) for S in SIZES])
    assert "transpose" in body_ops(exe)


@pytest.mark.slow
def test_slice_symbolic(rng):
    """Slices with symbolic and negative bounds: x[1:, :-1], x[-2:]."""
    exe = check_fn(lambda x: graphc.tanh(x[1:, :-1]) + x[:-1, 1:], [spec(("S", 5))],
                   [(randn(rng, (S, 5)),) for S in (2, 6)])
    assert "slice" in body_ops(exe)


@pytest.mark.slow
def test_slice_steps(rng):
    """Steps other than 1 (static shapes)."""
    exe = check_fn(lambda x: x[::2, 1::3] * 3.0, [spec((5, 7))], [(randn(rng, (5, 7)),)])
    assert "slice" in body_ops(exe)


@pytest.mark.slow
@pytest.mark.parametrize("axis", [0, -1])
def test_concat(axis, rng):
    specs = [spec(("S", 4)), spec(("T", 4))] if axis == 0 else [spec(("S", 4)), spec(("S", 2))]
    cases = [(randn(rng, (S, 4)), randn(rng, (T if axis == 0 else S, 4 if axis == 0 else 2)))
             for S, T in ((1, 2), (3, 1))]
    exe = check_fn(lambda x, y: graphc.concat([x, y, x], axis=axis), specs, cases)
    assert "concat" in body_ops(exe)


@pytest.mark.slow
@pytest.mark.parametrize("ids_dtype,ids_shape", [("int64", ("S",)), ("int32", (2, "S"))])
def test_embedding(ids_dtype, ids_shape, rng):
    table = randn(rng, (10, 4))
    exe = check_fn(lambda i: graphc.embedding(table, i), [spec(ids_shape, ids_dtype)],
                   [(rng.integers(0, 10, tuple(S if d == "S" else d for d in ids_shape))
                     .astype(ids_dtype),) for S in SIZES])
    assert "embedding" in body_ops(exe)


# -- opaque ops (library steps: their NumPy implementation) -----------------------------

def test_topk(rng):
    exe = check_fn(lambda x: graphc.topk(graphc.tanh(x), 2), [spec(("S", 6))],
                   [(randn(rng, (S, 6)),) for S in SIZES])
    assert "topk" in body_ops(exe) and "library" in step_kinds(exe)


def test_rope(rng):
    inv = positive(rng, (2,), low=0.01, high=1.0)
    exe = check_fn(lambda x, p: graphc.rope(x, p, inv, scale=1.5),
                   [spec((2, "S", 4)), spec(("S",), "int64")],
                   [(randn(rng, (2, S, 4)), rng.integers(0, 50, S)) for S in SIZES])
    assert "rope" in body_ops(exe)


def test_moe(rng):
    E, H, inter, K = 3, 4, 2, 2
    gate_up = randn(rng, (E, 2 * inter, H))
    down = randn(rng, (E, H, inter))
    exe = check_fn(lambda x, w, i: graphc.moe(x, w, i, gate_up, down),
                   [spec(("N", H)), spec(("N", K)), spec(("N", K), "int64")],
                   [(randn(rng, (N, H)), positive(rng, (N, K)), rng.integers(0, E, (N, K)))
                    for N in SIZES])
    assert "moe" in body_ops(exe)


def test_fused_graph(rng):
    """A graph already fused (op ``fused``) compiles as is (level O0: no more passes)."""
    g = graphc.trace(lambda x: graphc.exp(x) * 2.0 + 1.0, spec(("S", 4)))
    fused = graphc.optimize(g, ["fuse"])
    assert [n.op for n in fused.nodes.values() if n.op not in ("input", "constant")] == \
        ["fused"]
    check_graph(fused, [(randn(rng, (S, 4)),) for S in SIZES], level="O0")


# Every registered op runs on numba against the float64 reference in the op matrix
# (tests/ops/test_op_matrix.py, which fails for an op with no sample); the cases above
# add symbolic sizes, split rows and fused graphs for the ops numba lowers specially.


def test_kernel_source_is_numba():
    """The rendered module is an eager, cached, serial njit function over a range of its
    row loop, which the runtime splits over its threads (render.split_loop): no prange."""
    exe = graphc.compile(graphc.trace(lambda x: graphc.exp(x), spec(("S", 4))),
                         backend="numba")
    src = kernel_sources(exe)
    assert "@nb.njit(" in src and "cache=True" in src and "parallel=False" in src
    assert "in range(_graphc_lo, _graphc_hi):" in src and "nb.prange" not in src
    # S bounds the split loop alone: not passed, the runtime gives the loop's range
    assert "float32[:, ::1], int64, int64)'" in src and "def kernel(in0, out, _graphc_lo" in src
