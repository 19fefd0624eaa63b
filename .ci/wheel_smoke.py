"""Smoke test of an installed graphc (CI runs it in a fresh virtualenv holding only the
wheel and its dependencies, from a directory outside the source tree):

    python .ci/wheel_smoke.py [--source-tree DIR] [--imports-only]

Checks that graphc is the installed copy (not the source tree), that every subpackage,
the package data and the backend entry points are there, that oneDNN's sgemm loads
(Linux x86-64), then traces a small graph,
compiles it on numba, runs it and compares with NumPy.
"""
import argparse
import importlib
import importlib.resources
import os
import sys
from importlib.metadata import entry_points

MODULES = ["graphc", "graphc.ir", "graphc.ops", "graphc.frontend", "graphc.passes",
           "graphc.passes.builtin", "graphc.lower", "graphc.runtime", "graphc.backends",
           "graphc.backends.reference", "graphc.backends.numba_cpu",
           "graphc.backends.cupy_gpu", "graphc.models", "graphc.models.transformer",
           "graphc.cli"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source-tree", help="graphc must not be imported from here")
    ap.add_argument("--imports-only", action="store_true",
                    help="check imports, package data and entry points; compile nothing")
    args = ap.parse_args(argv)

    import graphc
    where = os.path.dirname(os.path.abspath(graphc.__file__))
    print(f"graphc {graphc.__version__} from {where}")
    if args.source_tree:
        tree = os.path.abspath(args.source_tree)
        if os.path.commonpath([where, tree]) == tree:
            sys.exit(f"graphc was imported from the source tree {tree}, not the install")
    for name in MODULES:
        importlib.import_module(name)
    header = importlib.resources.files("graphc.backends.cupy_gpu") / "cuda_emu.h"
    if not header.is_file():
        sys.exit("package data missing: graphc/backends/cupy_gpu/cuda_emu.h")
    eps = {ep.name for ep in entry_points(group="graphc.backends")}
    missing = {"reference", "numba", "cupy", "cupy-emu"} - eps
    if missing:
        sys.exit(f"backend entry points missing: {sorted(missing)}")
    print(f"{len(MODULES)} modules, cuda_emu.h, entry points {sorted(eps)}: ok")
    import platform
    from graphc.backends.numba_cpu import gemm
    if sys.platform == "linux" and platform.machine() == "x86_64" and not gemm.available():
        sys.exit(f"the onednn-cpu-gomp dependency does not load: {gemm.describe()}")
    print(f"float32 GEMM: {gemm.describe()}")
    if args.imports_only:
        return 0

    import numpy as np
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 16)).astype(np.float32)

    def block(x):
        h = graphc.relu(x @ w)
        return graphc.softmax(graphc.scale(h, 0.25), axis=-1)

    g = graphc.trace(block, graphc.spec(("S", 16), "float32"))
    exe = graphc.compile(g, backend="numba")
    for S in (1, 7):
        x = rng.standard_normal((S, 16)).astype(np.float32)
        h = np.maximum(x.astype(np.float64) @ w, 0) * 0.25
        want = np.exp(h - h.max(-1, keepdims=True))
        want /= want.sum(-1, keepdims=True)
        got = exe(x)
        err = float(np.abs(got - want).max())
        if got.shape != want.shape or not err < 1e-5:
            sys.exit(f"numba result at S={S} is off: shape {got.shape}, max error {err:.3g}")
    print(f"trace -> compile(numba) -> run at S=1, 7: matches NumPy (max error {err:.2g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
