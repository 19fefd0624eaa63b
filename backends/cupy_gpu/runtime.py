"""Running a lowered Program through CuPy (or through the CPU emulation of the same CUDA C).

The Program walk is graphc.runtime.program's. Here: the arena is one device allocation
(CuPy), kernels launch through ``cupy.RawModule`` functions (or the emulator's, which
take NumPy arrays and the same arguments), GEMMs go to cuBLAS through ``cupy.matmul``
(NumPy's matmul under emulation: the emulator runs our kernels, not NVIDIA's
libraries), attention runs the flash kernel.
"""
from __future__ import annotations

import numpy as np

from graphc.lower import loopir as L
from graphc.runtime.interpreter import run_graph
from graphc.runtime.program import ProgramExecutable, apply_chain

from . import templates

MAX_GRID = 1 << 16          # blocks of a grid-stride launch on a GPU
EMULATED_MAX_GRID = 4       # blocks run one after another on the CPU: keep them few
EMULATED_BLOCK = 64         # threads per emulated block (the kernels take any multiple of 32)


def _strided3(x, xp):
    """x [..., rows, d] as a 3-D array [B, rows, d] with the last dim contiguous, without a
    copy when the batch dims collapse (head-split transposes do)."""
    if x.ndim == 2:
        return x[None] if x.strides[-1] == x.itemsize else xp.ascontiguousarray(x)[None]
    lead, st = x.shape[:-2], x.strides[:-2]
    if x.strides[-1] != x.itemsize or not all(
            st[i] == st[i + 1] * lead[i + 1] for i in range(len(lead) - 1)):
        x = xp.ascontiguousarray(x)
    if x.ndim == 3:
        return x
    B = int(np.prod(lead))
    return xp.lib.stride_tricks.as_strided(x, (B,) + x.shape[-2:],
                                           (x.strides[-3] if B > 1 else 0,) + x.strides[-2:])


def _pointer(x):
    """What a kernel parameter ``T*`` receives for a strided NumPy view: a contiguous 1-D
    view from its first element to its last (the emulator, like a GPU, gets an address;
    the kernel does the striding)."""
    if x.flags.c_contiguous or x.size == 0:
        return x
    if any(s < 0 for s in x.strides):
        return np.ascontiguousarray(x)
    span = 1 + sum((n - 1) * s for n, s in zip(x.shape, x.strides)) // x.itemsize
    return np.lib.stride_tricks.as_strided(x, (span,), (x.itemsize,))


class CupyExecutable(ProgramExecutable):
    backend = "cupy"
    gemm_constant_views = False     # constants go to the device (C-contiguous) in any case

    def __init__(self, graph, program, kernels, module, cuda_kernels, templates_used,
                 emulate: bool, device_outputs: bool = False):
        self.emulate = emulate
        if emulate:
            self.xp = np
        else:
            import cupy
            self.xp = cupy
            self.array_types = (np.ndarray, cupy.ndarray)
        super().__init__(graph, program, kernels)
        self.module = module
        self.cuda_kernels = cuda_kernels          # name -> render.CudaKernel
        self.functions = {name: module.get_function(name)
                          for name in [*cuda_kernels, *templates_used]}
        self.device_outputs = device_outputs
        self.launches = 0
        if emulate:
            self.backend = "cupy (emulated on the CPU)"

    @property
    def needs_sync(self) -> bool:
        return not self.emulate

    def synchronize(self) -> None:
        if not self.emulate:
            import cupy
            cupy.cuda.get_current_stream().synchronize()

    # -- memory ------------------------------------------------------------------------
    def arena_view(self, arena, shape, dtype, offset):
        if self.emulate:
            return np.ndarray(shape, dtype, buffer=arena, offset=offset)
        import cupy
        return cupy.ndarray(shape, dtype, memptr=arena.data + offset)

    def to_device(self, array):
        if self.emulate:        # the emulated kernels take aligned C arrays (a NumPy array
            return np.require(array, requirements="CA")     # may be neither)
        return self.xp.ascontiguousarray(self.xp.asarray(array))

    def shares_memory(self, a, b) -> bool:
        return bool(self.xp.shares_memory(a, b))

    def results(self, arrays):
        if self.emulate or self.device_outputs:
            return arrays
        return [a.get() for a in arrays]

    # -- kernels -----------------------------------------------------------------------
    def _launch(self, name, grid, block, args):
        self.functions[name]((int(grid),), (int(block),), tuple(args))
        self.launches += 1

    def kernel(self, kernel, ops, out, acc, sz):
        ck = self.cuda_kernels[kernel.name]
        arrays = self.kernel_args(kernel, ops, out, acc)
        by_name = {b.name: a for b, a in zip(kernel.buffers, arrays)}
        args = []
        for p in ck.params:
            if p[0] == "buf":
                args.append(by_name[p[1].name])
            elif p[0] == "dim":
                args.append(np.int64(by_name[p[1]].shape[p[2]]))
            else:
                args.append(np.int64(sz.bindings[p[1]]))
        work = int(L.evaluate(ck.work, sz.bindings))
        if work <= 0:
            return
        block = EMULATED_BLOCK if self.emulate else ck.block
        blocks = -(-work // block) if ck.kind == "map" else work
        blocks = min(blocks, EMULATED_MAX_GRID if self.emulate else MAX_GRID)
        self._launch(kernel.name, blocks, block, args)

    def attention(self, step, ops, out, sz):
        xp, bindings = self.xp, sz.bindings
        q = apply_chain(ops[step.q.operand], step.q.chain, bindings)
        k = apply_chain(ops[step.k.operand], step.k.chain, bindings)
        v = apply_chain(ops[step.v.operand], step.v.chain, bindings)
        S, T, D, DV = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
        q3, k3, v3 = (_strided3(x, xp) for x in (q, k, v))
        B = q3.shape[0]
        o = self.attention_output(step, out, sz)
        o3 = _strided3(o, xp)
        copy_back = not self.shares_memory(o3, o) if o.size else False
        dtype = str(q.dtype)
        name = templates.flash_name(dtype, D, DV)
        bq = templates.flash_plan(dtype, D, DV)
        item = q3.itemsize
        st = [x.strides[i] // item for x in (q3, k3, v3, o3) for i in (0, 1)]
        if S and B:
            blocks = min(B * -(-S // bq), EMULATED_MAX_GRID if self.emulate else MAX_GRID)
            ptr = _pointer if self.emulate else (lambda x: x)
            self._launch(name, blocks, templates.THREADS,
                         [ptr(q3), ptr(k3), ptr(v3), ptr(o3), *(np.int64(s) for s in st), np.int64(B),
                          np.int64(S), np.int64(T), np.float64(step.scale),
                          np.int32(bool(step.causal)), np.int64(T - S)])
        if copy_back:
            o[...] = o3.reshape(o.shape)
        self.finish_attention(step, ops, out, o, sz)

    def library_step(self, step, ops, out, bindings):
        native = self.library.get(step.node)     # library.py: CUDA kernels + cuBLAS
        if native is not None:
            native(out, ops)
            return
        # No CUDA implementation: the op's NumPy reference on the host (compile() warned,
        # naming the op).
        host = [a if isinstance(a, np.ndarray) else a.get() for a in ops]
        out[...] = self.xp.asarray(run_graph(step.body, host, bindings)[0])

