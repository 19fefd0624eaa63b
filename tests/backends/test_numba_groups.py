"""Fusion-group shapes through the Numba backend: what the fuse pass puts together must
lower to kernels that compute the same as the float64 reference.

Each test also checks the group structure it means to exercise (how many steps, which
kinds), so a change in the fuse pass that splits the group shows up here as a failure
rather than as a silently easier test.
"""
import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.lower.program import GemmStep, KernelStep
from numba_check import (body_ops, check_fn, check_graph, positive, randn, rel_err,
                         step_kinds)

SIZES = (1, 5)
C = 8


def xs(rng, *shapes, sizes=SIZES, dtype="float32"):
    """One case per size S: arrays of ``shapes`` with "S" replaced."""
    return [tuple(randn(rng, tuple(S if d == "S" else d for d in sh), dtype) for sh in shapes)
            for S in sizes]


def one_kernel(exe):
    assert step_kinds(exe) == ["kernel"], exe.program
    return exe.program.steps[0].kernel


# -- elementwise groups ----------------------------------------------------------------

def test_chain_with_broadcasting(rng):
    """[S, C] with [C], [S, 1] and a scalar in one kernel."""
    b = randn(rng, (C,))
    exe = check_fn(lambda x, c: graphc.tanh(x * b + c) * 0.5 - graphc.exp(c) / (x * x + 1.0),
                   [spec(("S", C)), spec(("S", 1))], xs(rng, ("S", C), ("S", 1)))
    one_kernel(exe)


def test_broadcast_both_ways(rng):
    """[S, 1, C] + [3, 1] -> [S, 3, C]: both operands broadcast."""
    exe = check_fn(lambda x, y: graphc.sigmoid(x + y) * y,
                   [spec(("S", 1, C)), spec((3, 1))], xs(rng, ("S", 1, C), (3, 1)))
    one_kernel(exe)


def test_transpose_in_group(rng):
    """x.T read through a transposed index, combined with y in one kernel."""
    exe = check_fn(lambda x, y: graphc.relu(x.T + y) * 2.0,
                   [spec((C, "S")), spec(("S", C))], xs(rng, (C, "S"), ("S", C)))
    assert "transpose" in body_ops(exe)
    one_kernel(exe)


def test_reshape_in_group(rng):
    """Split and merge symbolic dims: [S, 8] -> [S, 2, 4] -> [2, S, 4] -> [2, 4*S]."""
    def fn(x, y):
        S = x.shape[0]
        h = graphc.tanh(x).reshape(S, 2, 4).transpose(1, 0, 2)
        return (h * y).reshape(2, S * 4)
    exe = check_fn(fn, [spec(("S", C)), spec((2, 1, 4))], xs(rng, ("S", C), (2, 1, 4)))
    assert {"reshape", "transpose"} <= body_ops(exe)
    one_kernel(exe)


def test_slices_in_group(rng):
    """A shifted difference x[1:] - x[:-1] with a symbolic stop."""
    exe = check_fn(lambda x: graphc.exp(x[1:, :] - x[:-1, :]) * x[1:, 2:3],
                   [spec(("S", C))], xs(rng, ("S", C), sizes=(2, 6)))
    one_kernel(exe)


def test_concat_in_group(rng):
    """concat of computed pieces (rotate-half style) then more math."""
    def fn(x):
        a, b = x[:, :4], x[:, 4:]
        return graphc.concat([graphc.neg(b), a * 2.0], axis=-1) * x
    exe = check_fn(fn, [spec(("S", C))], xs(rng, ("S", C)))
    assert "concat" in body_ops(exe)
    one_kernel(exe)


def test_embedding_in_group(rng):
    """Token embedding + a slice of a position table, scaled: one kernel."""
    table, pos = randn(rng, (20, C)), randn(rng, (16, C))

    def fn(ids):
        return graphc.scale(graphc.embedding(table, ids) + graphc.constant(pos)[:ids.shape[0]],
                            2.0)
    exe = check_fn(fn, [spec(("S",), "int64")],
                   [(rng.integers(0, 20, S),) for S in (1, 7, 16)])
    assert {"embedding", "slice"} <= body_ops(exe)
    one_kernel(exe)


def test_elementwise_float64(rng):
    b = randn(rng, (C,), "float64")
    exe = check_fn(lambda x: graphc.sqrt(x * x + b * b) - graphc.sigmoid(x) * graphc.log(b * b),
                   [spec(("S", C), "float64")], xs(rng, ("S", C), dtype="float64"))
    one_kernel(exe)


def test_in_place_chain(rng):
    """Elementwise groups that reuse an operand's arena buffer (in-place) between two
    reductions still compute the right values, twice in a row (the arena is reused)."""
    def fn(x):
        h = graphc.softmax(x, axis=-1)
        h2 = graphc.exp(h) + h
        return graphc.sum(h2 * h2, axis=-1, keepdims=True) * graphc.max(h2, axis=-1,
                                                                        keepdims=True)
    g = graphc.trace(fn, spec(("S", C)))
    exe = check_graph(g, xs(rng, ("S", C), sizes=(3, 6, 3)))
    assert len(exe.program.steps) >= 2


# -- reduction groups ------------------------------------------------------------------

RED_CASES = {
    # name: (fn, spec shape)
    "sum_last_prologue_epilogue": (
        lambda x: graphc.sqrt(graphc.sum(graphc.exp(x) * 0.5, axis=-1) + 1.0), ("S", C)),
    "sum_first_keepdims": (
        lambda x: graphc.sum(x * x, axis=0, keepdims=True) * 0.25 + 1.0, ("S", C)),
    "mean_middle_keepdims": (
        lambda x: graphc.tanh(graphc.mean(x + 1.0, axis=1, keepdims=True)), ("S", 3, 4)),
    "mean_last": (lambda x: graphc.mean(graphc.relu(x), axis=-1) - 2.0, (3, "S", 4)),
    "max_first": (lambda x: graphc.exp(graphc.max(graphc.neg(x), axis=0)), ("S", 3, 4)),
    "max_last_keepdims": (
        lambda x: graphc.max(x * 3.0, axis=-1, keepdims=True) + 1.0, ("S", C)),
    "max_two_axes": (lambda x: graphc.max(x.transpose(1, 0, 2), axis=(0, 2)), ("S", 3, 4)),
    "softmax_last_mask": (
        lambda x: graphc.softmax(graphc.scale(x, 0.5)
                                 + graphc.causal_mask(x.shape[0], x.shape[1]), axis=-1)
        * 2.0, ("S", "S")),
    "softmax_first": (lambda x: graphc.softmax(x * 2.0, axis=0) - 0.5, ("S", C)),
    "softmax_of_transpose": (lambda x: graphc.softmax(x.T, axis=-1), ("S", C)),
}


@pytest.mark.parametrize("name", sorted(RED_CASES))
def test_reduction_group(name, rng):
    fn, shape = RED_CASES[name]
    exe = check_fn(fn, [spec(shape)], xs(rng, shape, sizes=(1, 5)))
    assert step_kinds(exe) == ["kernel"], exe.program


NORM_CASES = ["layernorm_prologue_epilogue", "rmsnorm_prologue_epilogue",
              "add_layernorm_relu", "layernorm_transposed_store", "rmsnorm_heads"]


@pytest.mark.parametrize("name", NORM_CASES)
def test_norm_group(name, rng):
    w, b = positive(rng, (C,)), randn(rng, (C,))
    r = randn(rng, (C,))
    if name == "layernorm_prologue_epilogue":
        fn = lambda x, y: graphc.layernorm(graphc.tanh(x) * 2.0 + y, w, b) * r + 1.0  # noqa
    elif name == "rmsnorm_prologue_epilogue":
        fn = lambda x, y: graphc.silu(graphc.rmsnorm(x * y, w) + r)  # noqa: E731
    elif name == "add_layernorm_relu":
        fn = lambda x, y: graphc.relu(graphc.layernorm(x + y, w, b))  # noqa: E731
    elif name == "layernorm_transposed_store":
        fn = lambda x, y: graphc.layernorm(x - y, w, b).T  # noqa: E731
    else:  # per-head rmsnorm: [S, 8] -> [S, 2, 4], norm over 4, back to [S, 8]
        w4 = positive(rng, (4,))
        fn = lambda x, y: graphc.rmsnorm((x + y).reshape(x.shape[0], 2, 4), w4).reshape(  # noqa
            x.shape[0], C)
    exe = check_fn(fn, [spec(("S", C)), spec(("S", C))], xs(rng, ("S", C), ("S", C)))
    assert step_kinds(exe) == ["kernel"], exe.program
    if name == "add_layernorm_relu":
        assert "add_layernorm" in body_ops(exe)


def test_layernorm_float64(rng):
    w, b = positive(rng, (C,), "float64"), randn(rng, (C,), "float64")
    exe = check_fn(lambda x, y: graphc.layernorm(x + y, w, b) * 2.0,
                   [spec(("S", C), "float64")] * 2, xs(rng, ("S", C), ("S", C), dtype="float64"))
    assert step_kinds(exe) == ["kernel"]


# -- GEMM groups -----------------------------------------------------------------------

@pytest.mark.parametrize("act", ["relu", "gelu", "silu"])
def test_gemm_bias_activation_residual(act, rng):
    """act(x @ W + b) + r: BLAS, then one in-place epilogue (bias, activation, residual)."""
    W, b = randn(rng, (C, 6)), randn(rng, (6,))
    fn = getattr(graphc, act)
    exe = check_fn(lambda x, r: fn(x @ W + b) + r, [spec(("S", C)), spec(("S", 6))],
                   xs(rng, ("S", C), ("S", 6)))
    (step,) = exe.program.steps
    assert isinstance(step, GemmStep) and step.epilogue is not None and step.in_place
    assert "gemm" in body_ops(exe)


def test_gemm_float64(rng):
    W, b = randn(rng, (C, 6), "float64"), randn(rng, (6,), "float64")
    exe = check_fn(lambda x, r: graphc.gelu(x @ W + b) * r,
                   [spec(("S", C), "float64"), spec(("S", 6), "float64")],
                   xs(rng, ("S", C), ("S", 6), dtype="float64"))
    assert step_kinds(exe) == ["gemm"]


MATMUL_CASES = {  # name: (fn, a shape, b shape)
    "a_transposed": (lambda a, b: a.T @ b, (C, "S"), (C, 6)),
    "b_transposed": (lambda a, b: a @ b.T, ("S", C), (6, C)),
    "both_transposed": (lambda a, b: a.T @ b.T, (C, "S"), (6, C)),
    "batched": (lambda a, b: a @ b, (3, "S", C), (3, C, 6)),
    "batched_b_transposed": (lambda a, b: a @ b.transpose(0, 2, 1), (3, "S", C), (3, 6, C)),
    "heads_reshape": (lambda a, b: a.reshape(a.shape[0], 2, 4).transpose(1, 0, 2) @ b,
                      ("S", C), (2, 4, 6)),
}


@pytest.mark.parametrize("name", sorted(MATMUL_CASES))
def test_matmul_operand_views(name, rng):
    """Transposed / reshaped operands are strided views for BLAS, not copies."""
    fn, sa, sb = MATMUL_CASES[name]
    exe = check_fn(fn, [spec(sa), spec(sb)], xs(rng, sa, sb))
    assert step_kinds(exe) == ["gemm"], exe.program
    assert not body_ops(exe) - {"matmul", "transpose", "reshape"}


def test_batched_matmul_epilogue(rng):
    """[H, S, d] @ [H, d, T] then scale and an elementwise epilogue with a [T] side input."""
    bias = randn(rng, (6,))
    exe = check_fn(lambda a, b: graphc.tanh(graphc.scale(a @ b, 0.5) + bias),
                   [spec((3, "S", C)), spec((3, C, 6))], xs(rng, (3, "S", C), (3, C, 6)))
    (step,) = exe.program.steps
    assert isinstance(step, GemmStep) and step.epilogue is not None


@pytest.mark.parametrize("kind", ["gemm", "reduction", "elementwise"])
def test_transposed_store(kind, rng):
    """A group whose epilogue ends in a transpose: the store index is remapped (and the
    GEMM epilogue is not in place, it reads a scratch accumulator)."""
    W, b = randn(rng, (C, 6)), randn(rng, (6,))
    if kind == "gemm":
        fn = lambda x: graphc.relu(x @ W + b).T  # noqa: E731
    elif kind == "reduction":
        fn = lambda x: (graphc.softmax(x, axis=-1) * 2.0).T  # noqa: E731
    else:
        fn = lambda x: graphc.exp(x).T * 2.0  # noqa: E731
    exe = check_fn(fn, [spec(("S", C))], xs(rng, ("S", C)))
    (step,) = exe.program.steps
    if kind == "gemm":
        assert isinstance(step, GemmStep) and not step.in_place
    else:
        assert isinstance(step, KernelStep)


def test_gemm_reshaped_store(rng):
    """(x @ W + b) split into heads: reshape + transpose after the epilogue."""
    W, b = randn(rng, (C, C)), randn(rng, (C,))
    exe = check_fn(lambda x: (x @ W + b).reshape(x.shape[0], 2, 4).transpose(1, 0, 2) * 2.0,
                   [spec(("S", C))], xs(rng, ("S", C)))
    assert step_kinds(exe) == ["gemm"], exe.program


# -- groups that read the anchor at two indices ------------------------------------------

BIAS = np.linspace(-1.0, 1.0, C).astype(np.float32)
NON_POINTWISE = {  # name: (fn, shape of the second input)
    "gemm_plus_transpose": (lambda x, w: (lambda y: y + y.T)(x @ w), (C, C)),
    "gemm_bias_relu_plus_transpose": (
        lambda x, w: (lambda y: y - y.T)(graphc.relu(x @ w + BIAS)), (C, C)),
    "softmax_times_transpose": (
        lambda x, w: (lambda y: y * y.T)(graphc.softmax(x * w, axis=-1)), (C, C)),
    "sum_minus_permuted": (
        lambda x, w: (lambda s: s - s.reshape(2, 4).T.reshape(C))(graphc.sum(x * w, axis=-1)),
        (C, C)),
    "attention_plus_transpose": (
        lambda x, w: (lambda o: o + o.T)(graphc.ops.attention(x, w, x, scale=0.5)), (C, C)),
    "gemm_rank_up": (lambda x, r: x @ x + r, (1, C, C)),
    "layernorm_rank_up": (lambda x, r: graphc.layernorm(x, x[0], x[1]) * r, (1, C, C)),
}


@pytest.mark.parametrize("name", sorted(NON_POINTWISE))
def test_epilogue_not_pointwise(name, rng):
    """The epilogue needs the anchor at two indices (y + y.T) or at an index of another
    rank (y [C, C] + r [1, C, C]); the fuse pass allows both (no element count grows).
    Lowering stores the anchor in a scratch buffer and pulls the epilogue from it."""
    fn, shape = NON_POINTWISE[name]
    exe = check_fn(fn, [spec((C, C)), spec(shape)], xs(rng, (C, C), shape, sizes=(1,)))
    assert len(exe.program.steps) == 1, exe.program
    step = exe.program.steps[0]
    assert step.epilogue is not None and not getattr(step, "in_place", False)


# -- random graphs (the pass fuzzer's generator) ----------------------------------------

@pytest.mark.parametrize("seed", [6])
def test_random_graph(seed):
    """Graphs mixing attention, norms, gemm epilogues and movement (float64)."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "passes"))
    from random_graphs import random_graph
    from graphc.runtime.inputs import random_inputs
    g = random_graph(seed)
    exe = graphc.compile(g, backend="numba")
    ref = graphc.compile(g, backend="reference", float64=True)
    for S in (1, 7):
        arrays, _ = random_inputs(g, np.random.default_rng(seed), {"S": S})
        got = exe(*arrays)
        want = ref(*arrays)
        for a, b in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert rel_err(a, b) < 1e-10
