"""Running a lowered Program on the CPU (graphc.runtime.program does the walking): BLAS
for GEMMs (one thread per call, large ones split over the backend's threads: threads.py),
Numba kernels for one-row GEMMs (a decode step: templates.rows_gemm) and the rest,
blockwise attention with a score block per 128 query rows (a large one's heads split over
the threads)."""
from __future__ import annotations

import numpy as np

from graphc.ir.dims import evaluate
from graphc.runtime.interpreter import run_graph
from graphc.runtime.program import ProgramExecutable, apply_chain

from . import threads
from .templates import SOFTMAX_PARALLEL_MIN

ATTENTION_BLOCK = 128   # query rows per block: the score block is [heads, 128, T]


class NumbaExecutable(ProgramExecutable):
    backend = "numba"

    def __init__(self, graph, program, kernels, functions, attention_softmax, rows=None):
        super().__init__(graph, program, kernels)
        self.functions = functions        # name -> compiled function
        self.attention_softmax = attention_softmax  # scores dtype -> softmax module
        self.rows = rows or {}            # dtype -> module of the one-row GEMMs

    def _run(self, arrays, bindings, timer=None):
        # NumPy's BLAS on one thread while the call runs (threads.py); the split GEMMs
        # and the kernels' OpenMP pool use the cores.
        try:
            threads.blas_enter()
            return super()._run(arrays, bindings, timer)
        finally:
            threads.blas_exit()

    def matmul(self, a, b, out):
        """One row per batch entry (a decode step) against contiguous weights or cache:
        the Numba kernels of templates.rows_gemm; anything else: BLAS, split over the
        threads when large (threads.py)."""
        rows = self.rows.get(str(out.dtype))
        if (rows is not None and a.ndim >= 2 and a.shape[-2] == 1
                and a.dtype == b.dtype == out.dtype and b.flags.writeable
                and a.flags.c_contiguous and out.flags.c_contiguous):
            if a.ndim == 2 and b.ndim == 2 and b.flags.f_contiguous:     # x @ W.T
                rows.rows_shared_t(a, b.T, out)
                return
            if a.ndim == 3 and out.ndim == 3 and a.shape[0] == out.shape[0]:
                B = a.shape[0]
                a2, o2 = a.reshape(B, a.shape[2]), out.reshape(B, out.shape[2])
                if b.ndim == 2 and b.flags.c_contiguous:
                    rows.rows_shared(a2, b, o2)
                    return
                if b.ndim == 2 and b.flags.f_contiguous:
                    rows.rows_shared_t(a2, b.T, o2)
                    return
                if b.ndim == 3 and b.shape[0] == B and b.flags.c_contiguous:
                    rows.rows_batched(a2, b, o2)
                    return
        threads.matmul(a, b, out)

    def attention_scratch(self, step, shape, bindings):
        batch = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        T = evaluate(step.keys, bindings)
        rows = min(ATTENTION_BLOCK, shape[-2])
        # scores in the attention's dtype (float32 scores would cap a float64 graph at
        # float32 precision)
        return {("scores", step.node): np.empty(batch * rows * max(T, 1), step.acc_dtype),
                ("inv", step.node): np.empty(batch * rows, step.acc_dtype)}

    def library_step(self, step, ops, out, bindings):
        native = self.library.get(step.node)     # library.py: a native kernel
        if native is not None:
            native(out, ops)
        else:                                     # the op's NumPy reference
            out[...] = run_graph(step.body, ops, bindings)[0]

    def kernel(self, kernel, ops, out, acc, sz):
        self.functions[kernel.name](*self.kernel_args(kernel, ops, out, acc),
                                    *sz.size_args[kernel.name])

    def attention(self, step, ops, out, sz):
        bindings = sz.bindings
        q = apply_chain(ops[step.q.operand], step.q.chain, bindings)
        k = apply_chain(ops[step.k.operand], step.k.chain, bindings)
        v = apply_chain(ops[step.v.operand], step.v.chain, bindings)
        S, T = q.shape[-2], k.shape[-2]
        batch = q.shape[:-2]
        B = int(np.prod(batch)) if batch else 1
        q = q.reshape((B,) + q.shape[-2:])
        kT = k.reshape((B,) + k.shape[-2:]).transpose(0, 2, 1)
        v = v.reshape((B,) + v.shape[-2:])
        o = self.attention_output(step, out, sz)
        if o.size == 0:               # no query rows (or heads, or value dims): nothing to
            self.finish_attention(step, ops, out, o, sz)         # compute (and no memory
            return                                               # for a view to share)
        o3 = o.reshape((B, S, o.shape[-1]))
        if not np.shares_memory(o3, o):
            raise AssertionError("attention output view must not copy")
        scores = sz.scratch[("scores", step.node)]
        mod = self.attention_softmax[str(scores.dtype)]
        inv = sz.scratch[("inv", step.node)]
        diag = T - S
        rows = min(ATTENTION_BLOCK, S)
        scale, causal = float(step.scale), bool(step.causal)

        def blocks(lo, hi, matmul, softmax_for):
            """Heads lo..hi, 128 query rows at a time, in their part of the scratch."""
            for r0 in range(0, S, rows):
                r1 = min(S, r0 + rows)
                kend = T if not causal else max(0, min(T, r1 + diag))
                blk = np.ndarray((hi - lo, r1 - r0, kend), scores.dtype, buffer=scores,
                                 offset=lo * rows * T * scores.itemsize)
                inv_blk = np.ndarray((hi - lo, r1 - r0), inv.dtype, buffer=inv,
                                     offset=lo * rows * inv.itemsize)
                matmul(q[lo:hi, r0:r1], kT[lo:hi, :, :kend], blk)
                softmax_for(blk)(blk, inv_blk, scale, causal, r0, diag)
                matmul(blk, v[lo:hi, :kend], o3[lo:hi, r0:r1])
                o3[lo:hi, r0:r1] *= inv_blk[:, :, None]

        def one_thread(a, b, c):
            np.matmul(a, b, out=c)
        n_thr = threads.workers() if B * S * T * q.shape[-1] >= threads.SPLIT_MIN_MACS else 1
        if n_thr > 1 and (B % n_thr == 0 or B >= 4 * n_thr):
            # heads split over the threads, each running all its row blocks (one-thread
            # GEMMs, the serial softmax): one hand-off per call, not three per block
            threads.run_parallel([
                (lambda lo=lo, hi=hi: blocks(lo, hi, one_thread, lambda blk: mod._ser))
                for lo, hi in threads.parts(B, n_thr)])
        else:   # every head at once, each block's GEMMs and softmax split in turn
            blocks(0, B, threads.matmul,
                   lambda blk: mod._par if blk.size >= SOFTMAX_PARALLEL_MIN else mod._ser)
        self.finish_attention(step, ops, out, o, sz)
