"""Helpers for the Numba backend tests: compile a graph for ``numba`` and for the float64
reference (``backend="reference", float64=True``), run both on the same inputs, compare.

Float outputs are compared by relative norm error, at the precision of the graph's
declared dtype (float32 < 1e-5, float64 < 1e-12); infinities (a causal mask's -inf) must
sit exactly where the reference has them. Integer and bool outputs must match exactly.

Every distinct kernel costs a Numba compile (~0.3-1 s on a cold cache), so the tests reuse
a few shapes: identical kernels are compiled once per session.
"""
from __future__ import annotations

import numpy as np

import graphc
from arrays import ints, nonzero, positive, randn, rel_err  # noqa: F401 (re-exported)
from graphc.lower.program import AttentionStep, GemmStep, KernelStep, LibraryStep

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def assert_close(out, want, dtype, tol=None, what="output"):
    """``out`` (numba) has ``dtype`` and the shape of ``want`` (the float64 reference) and
    matches it."""
    dtype = np.dtype(dtype)
    assert isinstance(out, np.ndarray), f"{what}: got {type(out).__name__}, not an array"
    assert out.shape == want.shape, f"{what}: shape {out.shape} != reference {want.shape}"
    assert out.dtype == dtype, f"{what}: dtype {out.dtype} != declared {dtype}"
    if dtype.kind != "f":
        np.testing.assert_array_equal(out, want.astype(dtype), err_msg=what)
        return
    finite = np.isfinite(want)
    np.testing.assert_array_equal(out[~finite], want[~finite], err_msg=what)
    assert np.isfinite(out[finite]).all(), f"{what}: non-finite values where finite expected"
    err = rel_err(out[finite], want[finite])
    limit = TOL[dtype] if tol is None else tol
    assert err < limit, f"{what}: relative error {err:.3g} >= {limit:.1g} ({dtype})"


def compile_numba(g, level=None, **options):
    if level is None:
        return graphc.compile(g, backend="numba", **options)
    return graphc.compile(g, backend="numba", level=level, **options)


def check_graph(g, cases, *, level=None, exe=None, tol=None):
    """Compile ``g`` for numba (unless ``exe`` is given) and check every tuple of arrays in
    ``cases`` against the float64 reference. Returns the numba executable."""
    exe = exe or compile_numba(g, level)
    ref = graphc.compile(g, backend="reference", float64=True)
    declared = [t.np_dtype for t in g.output_types]
    for arrays in cases:
        got = as_tuple(exe(*arrays))
        want = as_tuple(ref(*arrays))
        assert len(got) == len(want) == len(declared)
        shapes = ", ".join(str(np.shape(a)) for a in arrays)
        for k, (o, w, dt) in enumerate(zip(got, want, declared)):
            assert_close(o, w, dt, tol, what=f"output {k} for inputs {shapes}")
    return exe


def check_fn(fn, specs, cases, **kw):
    """Trace ``fn`` on ``specs`` and :func:`check_graph` it."""
    return check_graph(graphc.trace(fn, *specs), cases, **kw)


def body_ops(exe) -> set[str]:
    """Op names computed by the compiled program (inside its fusion groups)."""
    ops = set()
    for node in exe.graph.nodes.values():
        if node.op == "fused":
            ops |= {n.op for n in node.attrs["body"].nodes.values()
                    if n.op not in ("input", "constant")}
    return ops


def step_kinds(exe) -> list[str]:
    names = {KernelStep: "kernel", GemmStep: "gemm", AttentionStep: "attention",
             LibraryStep: "library"}
    return [names[type(s)] for s in exe.program.steps]


def kernel_sources(exe) -> str:
    return "\n".join(exe.sources.values())
