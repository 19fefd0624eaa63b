"""lower/indices.py: the range-based index simplification must not change a single
index, for any binding of the sizes (1 included), and must remove the divisions a
reshape of a flattened axis leaves in the inner loop."""
import numpy as np
import pytest

from graphc.ir.dims import Sym, prod
from graphc.lower import loopir as L
from graphc.lower.exprs import delinearize, dim_expr, reshape_index
from graphc.lower.indices import simplify_indices

B, S = Sym.of("B"), Sym.of("S")


def reshape_kernel(out_shape, in_shape, shift=0):
    """A kernel laid out as lower/kernels.py lays out an elementwise group (one flat
    parallel loop over the outer dims, decoded; the last dim inside) whose store index
    is the input index of ``reshape(in_shape -> out_shape)`` (the last output index
    shifted by ``shift``, as a slice's start shifts it)."""
    names = [f"i{k}" for k in range(len(out_shape))]
    idx = [L.Var(n) for n in names]
    idx[-1] = L.add(idx[-1], L.c(shift))
    store = L.Store("out", tuple(reshape_index(idx, out_shape, in_shape)), L.c(0))
    inner = [L.Loop(names[-1], dim_expr(out_shape[-1]), [store])]
    outer = out_shape[:-1]
    decode = [L.Assign(n, e, "int64")
              for n, e in zip(names[:-1], delinearize(L.Var("ip"), outer))]
    body = [L.Loop("ip", dim_expr(prod(outer)), decode + inner, True)] if outer else inner
    return L.Kernel("k", [L.BufferParam("out", "float32", len(in_shape), "out")],
                    ["B", "S"], body)


def stores(kernel, env):
    """Every store's index, in order, for the sizes ``env``."""
    out = []

    def run(stmts, env):
        for s in stmts:
            if isinstance(s, L.Loop):
                for v in range(L.evaluate(s.extent, env)):
                    run(s.body, {**env, s.var: v})
            elif isinstance(s, L.Assign):
                env[s.var] = L.evaluate(s.value, env)
            else:
                out.append(tuple(L.evaluate(i, env) for i in s.index))
    run(kernel.body, dict(env))
    return out


def divisions(code):
    """How many // and % a kernel (or a statement list) holds."""
    body = code.body if isinstance(code, L.Kernel) else code
    return sum(1 for n in L.walk(body) if isinstance(n, L.Bin) and n.op in ("//", "%"))


def random_shapes(rng):
    """Two shapes of the same size: the same factors grouped differently (and
    reordered: a reshape only needs equal products), with unit dims here and there."""
    atoms = [B, S] + [int(a) for a in rng.choice([2, 3], size=int(rng.integers(0, 3)))]

    def group(atoms):
        atoms = list(atoms)
        shape, k = [], 0
        while k < len(atoms):
            n = int(rng.integers(1, 3))
            shape.append(prod(atoms[k:k + n]))
            k += n
        if rng.random() < 0.4:
            shape.insert(int(rng.integers(0, len(shape) + 1)), 1)
        return tuple(shape)
    return group(atoms), group(rng.permutation(np.array(atoms, dtype=object)))


def test_random_reshapes_keep_every_index():
    rng = np.random.default_rng(3)
    removed = 0
    for trial in range(150):
        out_shape, in_shape = random_shapes(rng)
        k = reshape_kernel(out_shape, in_shape, shift=int(rng.integers(0, 2)))
        simple = simplify_indices(k)
        removed += divisions(k) - divisions(simple)
        assert divisions(simple) <= divisions(k)
        for b, s in ((1, 1), (1, 3), (2, 1), (3, 2)):
            env = {"B": b, "S": s}
            assert stores(simple, env) == stores(k, env), (out_shape, in_shape, env,
                                                           str(simple))
    assert removed > 25


def test_flattened_axis_read_back_has_no_division():
    """[B, S] read from [1, B*S, 1] (the exporters' GatherND over a flattened batch):
    the index is i0 * S + i1 with no division left."""
    k = simplify_indices(reshape_kernel((B, S), (1, B * S, 1)))
    (store,) = [n for n in L.walk(k.body) if isinstance(n, L.Store)]
    assert not any(isinstance(n, L.Bin) and n.op in ("//", "%") for n in L.walk(list(store.index)))
    assert stores(k, {"B": 2, "S": 3}) == [(0, i, 0) for i in range(6)]


@pytest.mark.parametrize("expr,want", [
    # a clamp that cannot bind goes; one that can stays
    (L.Bin("min", L.Bin("max", L.Var("i"), L.c(0)), L.Bin("-", L.Var("S"), L.c(1))), "i"),
    (L.Bin("min", L.Bin("max", L.Var("i"), L.c(0)), L.Bin("-", L.Var("S"), L.c(2))),
     "min(i, (S - 2))"),
    (L.Select(L.Bin("<", L.Var("i"), L.c(0)), L.c(7), L.Var("i")), "i"),
    (L.Bin("//", L.Bin("+", L.Var("i"), L.c(1)), L.Var("S")), None),      # i + 1 may be S
])
def test_clamps_and_selects(expr, want):
    k = L.Kernel("k", [L.BufferParam("out", "int64", 1, "out")], ["S"],
                 [L.Loop("i", L.Var("S"), [L.Store("out", (L.c(0),), expr)])])
    (store,) = [n for n in L.walk(simplify_indices(k).body) if isinstance(n, L.Store)]
    if want is None:
        assert store.value == expr
    else:
        assert L.format_expr(store.value) == want


def test_invariant_divisions_leave_the_inner_loop():
    """out[i0 // S, i0 % S, i1] in a loop over i1: the division is made once per i0,
    before the loop; the indices stay the same."""
    i0, i1 = L.Var("i0"), L.Var("i1")
    store = L.Store("out", (L.Bin("//", i0, L.Var("S")), L.Bin("%", i0, L.Var("S")), i1),
                    L.Load("acc", (i0, i1)))
    k = L.Kernel("k", [L.BufferParam("out", "float32", 3, "out"),
                       L.BufferParam("acc", "float32", 2)], ["B", "S"],
                 [L.Loop("i0", dim_expr(B * S), [L.Loop("i1", L.c(8), [store])], True)])
    simple = simplify_indices(k)
    (outer,) = simple.body
    inner = outer.body[-1]
    assert isinstance(inner, L.Loop) and inner.var == "i1"
    assert divisions(inner.body) == 0 and divisions(outer.body[:-1]) == 2
    for b, s in ((1, 1), (2, 3)):
        assert stores(simple, {"B": b, "S": s}) == stores(k, {"B": b, "S": s})
