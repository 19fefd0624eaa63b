"""passes/views.py: which reshape / transpose / slice chains are one strided view, and
what that view is. Checked against NumPy on random chains, symbolically on the chain
torch's MultiheadAttention export writes, and end to end: a GEMM / attention reads such
a chain without a copy kernel and computes what the reference does."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.ir.dims import Sym, evaluate
from graphc.passes.views import chain_layout, chain_shape
from graphc.runtime.program import apply_chain, strided_layout

sys.path.insert(0, str(Path(__file__).parents[1] / "backends"))
from numba_check import check_graph, randn  # noqa: E402

B, S = Sym.of("B"), Sym.of("S")


def as_view(arr, layout):
    offset, axes = layout
    flat = arr.reshape(-1)[offset:]
    return np.lib.stride_tricks.as_strided(
        flat, tuple(n for n, _ in axes), tuple(s * arr.itemsize for _, s in axes))


def numpy_chain(arr, chain):
    """``chain`` applied by NumPy step by step, and whether every step was a view."""
    view = True
    for op, arg in chain:
        before = arr
        if op == "reshape":
            arr = arr.reshape(arg)
        elif op == "transpose":
            arr = arr.transpose(arg)
        else:
            arr = arr[tuple(slice(s, e, st) for s, e, st in zip(*arg))]
        view = view and (arr.size == 0 or np.shares_memory(arr, before))
    return arr, view


def random_chain(rng, shape, steps):
    chain = []
    for _ in range(steps):
        kind = rng.choice(["reshape", "transpose", "slice"])
        n = len(shape)
        if kind == "transpose":
            axes = tuple(int(a) for a in rng.permutation(n))
            chain.append(("transpose", axes))
            shape = tuple(shape[a] for a in axes)
        elif kind == "slice":
            starts, stops, steps_ = [], [], []
            for d in shape:
                if rng.random() < 0.6 or d == 1:
                    starts.append(0), stops.append(d), steps_.append(1)
                else:
                    s = int(rng.integers(0, d - 1))
                    e = int(rng.integers(s + 1, d + 1))
                    starts.append(s), stops.append(e), steps_.append(int(rng.integers(1, 3)))
            chain.append(("slice", (tuple(starts), tuple(stops), tuple(steps_))))
            shape = chain_shape(shape, chain[-1:])
        else:                        # split a dim or merge two neighbours, with unit dims
            shape = list(shape)
            k = int(rng.integers(0, n))
            if rng.random() < 0.5 and n > 1 and k < n - 1:
                shape[k:k + 2] = [shape[k] * shape[k + 1]]
            else:
                d = shape[k]
                f = next((f for f in (2, 3, 5) if d % f == 0 and d > f), None)
                if f is not None:
                    shape[k:k + 1] = [f, d // f]
                else:
                    shape.insert(k, 1)
            if rng.random() < 0.3:
                shape = [s for s in shape if s != 1] or [1]
            shape = tuple(shape)
            chain.append(("reshape", shape))
    return chain


def test_random_chains_against_numpy():
    """A layout, where given, reads the same elements as NumPy's step-by-step chain, from
    the same memory; wherever NumPy's chain is a view at every step, a layout is found."""
    rng = np.random.default_rng(7)
    found = 0
    for trial in range(600):
        shape = tuple(int(d) for d in rng.choice([1, 2, 3, 4, 6], size=rng.integers(1, 5)))
        arr = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
        chain = random_chain(rng, shape, int(rng.integers(1, 6)))
        want, numpy_view = numpy_chain(arr, chain)
        layout = chain_layout(shape, chain)
        if numpy_view:
            assert layout is not None, (shape, chain)
        if layout is None:
            continue
        found += 1
        got = as_view(arr, layout)
        assert got.shape == want.shape, (shape, chain)
        np.testing.assert_array_equal(got, want, err_msg=str((shape, chain)))
        assert got.size == 0 or np.shares_memory(got, arr)
    assert found > 300


# torch's MultiheadAttention export (batch_first=False): the in-projection's output
# [S, B, 3, E] -> select q -> [S, B*h, dh] (merges B with the heads: not a view when
# B > 1) -> [B*h, S, dh] -> [B, h, S, dh] (splits them again: the whole is a view).
E, H = 12, 3
MHA = [("slice", ((0, 0, 1, 0), (S, B, 2, E), (1, 1, 1, 1))),
       ("reshape", (1, S, B, 1, E)), ("transpose", (3, 1, 2, 0, 4)),
       ("reshape", (S, H * B, E // H)), ("transpose", (1, 0, 2)),
       ("reshape", (B, H, S, E // H))]


def test_mha_chain_is_a_view_for_every_batch():
    layout = chain_layout((S, B, 3, E), MHA)
    assert layout is not None
    rng = np.random.default_rng(0)
    for b, s in ((1, 5), (3, 4), (2, 1)):
        bind = {"B": b, "S": s}
        arr = rng.standard_normal((s, b, 3, E)).astype(np.float32)
        concrete = [(op, tuple(evaluate(d, bind) for d in arg) if op == "reshape" else
                     tuple(tuple(evaluate(d, bind) for d in r) for r in arg)
                     if op == "slice" else arg) for op, arg in MHA]
        want = apply_chain(arr, MHA, bind)                # NumPy, copying at B > 1
        off, axes = layout
        symbolic = (evaluate(off, bind), [(evaluate(n, bind), evaluate(st, bind))
                                          for n, st in axes])
        np.testing.assert_array_equal(as_view(arr, symbolic), want)
        offset, shape, strides = strided_layout(MHA, arr.shape, bind)
        assert shape == want.shape
        np.testing.assert_array_equal(as_view(arr, (offset, list(zip(shape, strides)))),
                                      want)
        assert chain_layout(arr.shape, concrete) is not None


@pytest.mark.parametrize("source,chain", [
    ((S, B), [("transpose", (1, 0)), ("reshape", (S * B,))]),   # merges a transposed pair
    ((S, B), [("slice", ((0, 1), (S, B), (1, 1))), ("reshape", (S * (B - 1),))]),
    ((4, 5), [("slice", ((0, 0), (4, 5), (1, 2))), ("reshape", (12,))]),   # rows of 3 of 5
])
def test_copies_are_refused(source, chain):
    assert chain_layout(source, chain) is None


def test_views_are_found():
    """Reshapes that undo each other, a split after a transpose, a slice of a split."""
    assert chain_layout((S, B), [("reshape", (S * B,)), ("reshape", (S, B))]) == \
        (0, [(S, B), (B, 1)])
    assert chain_layout((S, 6), [("transpose", (1, 0)), ("reshape", (2, 3, S))]) == \
        (0, [(2, 3), (3, 1), (S, 6)])
    assert chain_layout((S, 6), [("reshape", (S, 2, 3)),
                                 ("slice", ((0, 1, 0), (S, 2, 3), (1, 1, 1)))]) == \
        (3, [(S, 6), (1, 0), (3, 1)])


def attention_mha(x, w):
    """torch-export style attention: q / k / v selected from one in-projection
    [S, B, 3, E] and split into heads through [S, B*h, dh]."""
    s, b = x.shape[0], x.shape[1]
    qkv = (x @ w).reshape(s, b, 3, E)

    def heads(i):
        t = qkv[:, :, i:i + 1, :].reshape(s, b * H, E // H).transpose(1, 0, 2)
        return t.reshape(b, H, s, E // H)
    out = graphc.ops.attention(heads(0), heads(1), heads(2), scale=1 / math.sqrt(E // H))
    return out.transpose(2, 0, 1, 3).reshape(s * b, E) @ w[:, :E]


def test_attention_reads_mha_heads_without_copies(rng):
    g = graphc.trace(attention_mha, spec(("S", "B", E)), spec((E, 3 * E)))
    w = randn(rng, (E, 3 * E))
    exe = check_graph(g, [(randn(rng, (s, b, E)), w) for s, b in ((5, 1), (4, 3), (1, 2))],
                      level="O2")
    kinds = [n.attrs["kind"] for n in exe.graph.nodes.values() if n.op == "fused"]
    assert "movement" not in kinds and kinds.count("attention") == 1, kinds
