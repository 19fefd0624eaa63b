"""See the CUDA C graphc generates for a block of a model, and run it without a GPU.

    python examples/gpu_kernels.py

The cupy backend renders every fused kernel to CUDA C. On a machine with an NVIDIA GPU
``backend="cupy"`` runs it there; anywhere else ``emulate=True`` compiles the very same
source with g++ and OpenMP and runs it on the CPU, block by block, which is how to debug a
GPU kernel on a laptop (docs/cupy_gpu.md).
"""
import math

import numpy as np

import graphc
from graphc import spec
from graphc.backends.cupy_gpu import gpu_available

rng = np.random.default_rng(0)
w = rng.standard_normal(64).astype(np.float32)
b = rng.standard_normal(64).astype(np.float32)


def block(q, k, v, x):
    """Causal attention over 4 heads, then a residual add and a layernorm."""
    o = graphc.ops.attention(q, k, v, scale=1 / math.sqrt(16), causal=True)
    o = o.transpose(1, 0, 2).reshape(x.shape[0], 64)
    return graphc.layernorm(o + x, w, b, eps=1e-5)


g = graphc.trace(block, spec((4, "S", 16)), spec((4, "S", 16)), spec((4, "S", 16)),
                 spec(("S", 64)))
on_gpu, why = gpu_available()
exe = graphc.compile(g, backend="cupy", emulate=not on_gpu)
print(f"running on {'the GPU: ' + why if on_gpu else 'the CPU emulation (' + why + ')'}\n")
print(exe.program)                         # steps and loop-IR kernels
row_kernel = next(k for k in exe.cuda_kernels.values() if k.kind == "row")
print("\nThe layernorm kernel as CUDA C (one block per row, block reductions):\n")
print(row_kernel.source)

S = 37
q, k, v = (rng.standard_normal((4, S, 16)).astype(np.float32) for _ in range(3))
x = rng.standard_normal((S, 64)).astype(np.float32)
y = exe(q, k, v, x)
ref = graphc.compile(g, backend="reference", float64=True)(q, k, v, x)
err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
print(f"S={S}: relative error against the float64 reference {err:.2e}")
assert err < 1e-5
