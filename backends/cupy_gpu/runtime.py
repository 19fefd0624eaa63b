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
from graphc.runtime.program import ProgramExecutable

from . import templates

MAX_GRID = 1 << 16          # blocks of a grid-stride launch on a GPU
EMULATED_MAX_GRID = 4       # blocks run one after another on the CPU: keep them few
EMULATED_BLOCK = 64         # threads per emulated block (the kernels take any multiple of 32)


def _unit_rows(x) -> bool:
    """The last dim has unit stride and no stride is negative (what the flash kernel
    reads and writes through strides)."""
    return x.strides[-1] == x.itemsize and all(st >= 0 for st in x.strides) if x.size \
        else True


def flash_layout(q, k, v, o, mask):
    """The two-level batch of the flash kernel for these views, or None when two levels
    cannot describe them: (N2, the stride list of the kernel's parameters, N).

    Over q's batch dims, each operand reads batch index i through (stride, div): index
    i // div times the stride (k or v with fewer heads than q: div = the group; a
    broadcast dim: stride 0). Dims of size 1 are dropped and neighbours merged where
    every operand allows it (a contiguous pair, a broadcast inner dim, a group
    continuing an outer dim); at most two may remain."""
    batch = q.shape[:-2]

    def per_dim(x):
        shape, st = x.shape[:-2], tuple(s // x.itemsize for s in x.strides[:-2])
        pad = len(batch) - len(shape)
        out = []
        for i, n in enumerate(batch):
            j = i - pad
            m = shape[j] if j >= 0 else 1
            s = st[j] if j >= 0 else 0
            out.append((0, 1) if m == 1 else (s, 1) if m == n else (s, n // m))
        return out
    arrays = [per_dim(x) for x in (q, k, v, o)]
    if mask is not None:
        arrays.append(per_dim(mask))
    dims = []           # [(size, [(stride, div) per array])]
    for i, n in enumerate(batch):
        if n == 1:
            continue
        cur = (n, [a[i] for a in arrays])
        if dims:
            merged = _merge(dims[-1], cur)
            if merged is not None:
                dims[-1] = merged
                continue
        dims.append(cur)
    if len(dims) > 2:
        return None
    dims = [(1, [(0, 1)] * len(arrays))] * (2 - len(dims)) + dims
    (n1, a1), (n2, a2) = dims
    if any(d != 1 for d in (a1[0][1], a2[0][1], a1[3][1], a2[3][1])):
        return None                              # q and the output have no groups
    rs = [x.strides[-2] // x.itemsize for x in (q, k, v, o)]
    (qs1, _), (ks1, kd1), (vs1, vd1), (os1, _) = a1[:4]
    (qs2, _), (ks2, kd2), (vs2, vd2), (os2, _) = a2[:4]
    strides = [qs1, qs2, rs[0], ks1, kd1, ks2, kd2, rs[1], vs1, vd1, vs2, vd2, rs[2],
               os1, os2, rs[3]]
    if mask is not None:
        (ms1, md1), (ms2, md2) = a1[4], a2[4]
        sr = mask.strides[-2] // mask.itemsize if mask.shape[-2] != 1 else 0
        sc = mask.strides[-1] // mask.itemsize if mask.shape[-1] != 1 else 0
        strides += [ms1, md1, ms2, md2, sr, sc]
    else:
        strides += [0, 1, 0, 1, 0, 0]
    return n2, strides, n1 * n2


def _merge(outer, inner):
    """Two neighbouring batch dims as one, or None: for every operand, index
    i = i_outer * n_inner + i_inner must read (i // div) * stride."""
    na, aa = outer
    nb, ab = inner
    out = []
    for (sa, da), (sb, db) in zip(aa, ab):
        if sa == 0 and sb == 0:
            out.append((0, 1))
        elif sb == 0:                                  # broadcast along the inner dim
            out.append((sa, nb * da))
        elif da == 1 and nb % db == 0 and sa == sb * (nb // db):
            out.append((sb, db))                       # contiguous (or a group) across
        else:
            return None
    return (na * nb, out)


def _expanded(q, k, v, o, mask, xp):
    """Every operand as a C-contiguous [N, rows, d] array (k, v repeated per group, the
    mask broadcast) and the output as a fresh one, for the layouts flash_layout cannot
    describe; the caller copies the output back."""
    from graphc.ops.fused import expand_kv
    batch = q.shape[:-2]
    N = int(np.prod(batch)) if batch else 1

    def flat(x):
        return xp.ascontiguousarray(x).reshape((N,) + x.shape[-2:])
    k, v = expand_kv(k, batch), expand_kv(v, batch)     # (NumPy calls dispatch to CuPy)
    if mask is not None:
        mask = flat(xp.broadcast_to(mask, batch + mask.shape[-2:]))
    return flat(q), flat(k), flat(v), xp.empty((N,) + o.shape[-2:], o.dtype), mask


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

    def to_input(self, array):
        # read-only and memory-mapped arrays: the emulator reads them through the const
        # parameters (np.require copies what is not aligned C), a GPU copies them over
        if self.emulate and isinstance(array, np.ndarray):
            return np.require(np.asarray(array), requirements="CA")
        return self.to_device(array)

    @property
    def memory_kind(self) -> str:
        return "memory" if self.emulate else "GPU memory"

    def memory_available(self):
        if self.emulate:
            return super().memory_available()
        import os
        if os.environ.get("GRAPHC_MEMORY_LIMIT"):
            return super().memory_available()
        try:
            import cupy
            free, _total = cupy.cuda.Device().mem_info
            # what the pool holds already is free for this call too
            return int(free + cupy.get_default_memory_pool().free_bytes())
        except Exception:       # no way to ask: nothing is checked
            return None

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
        xp = self.xp
        q, k, v, mask = self.attention_operands(step, ops, sz)
        S, T, D, DV = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
        # the flash kernel reads rows with a unit-stride last dim; others are copied
        q, k, v = (x if _unit_rows(x) else xp.ascontiguousarray(x) for x in (q, k, v))
        o = self.attention_output(step, out, sz, _unit_rows)
        o_step = o
        lay = flash_layout(q, k, v, o, mask)
        if lay is None:       # a layout two batch strides cannot describe: copies
            q, k, v, o, mask = _expanded(q, k, v, o, mask, xp)
            lay = flash_layout(q, k, v, o, mask)
        n2, strides, N = lay
        dtype = str(q.dtype)
        name = templates.flash_name(dtype, D, DV)
        bq = templates.flash_plan(dtype, D, DV)
        if S and N and DV:
            blocks = min(N * -(-S // bq), EMULATED_MAX_GRID if self.emulate else MAX_GRID)
            ptr = _pointer if self.emulate else (lambda x: x)
            mode = 0 if mask is None else 2 if step.mask_bool else 1
            madd = mask if mode == 1 else self._dummy(q.dtype)
            mbool = mask if mode == 2 else self._dummy(np.bool_)
            self._launch(name, blocks, templates.THREADS,
                         [ptr(q), ptr(k), ptr(v), ptr(o), ptr(madd), ptr(mbool),
                          np.int64(n2), *(np.int64(x) for x in strides), np.int64(N),
                          np.int64(S), np.int64(T), np.float64(step.scale),
                          np.int32(bool(step.causal)), np.int64(T - S), np.int32(mode),
                          np.float64(step.mask_fill), np.float64(step.softcap)])
        if o is not o_step:
            o_step[...] = o.reshape(o_step.shape)
        self.finish_attention(step, ops, out, o_step, sz)

    def _dummy(self, dtype):
        """A one-element array for the mask parameter a launch does not use."""
        key = ("dummy", np.dtype(dtype).str)
        if key not in self.__dict__:
            self.__dict__[key] = self.xp.zeros((1,), dtype)
        return self.__dict__[key]

    def library_step(self, step, ops, out, bindings):
        native = self.library.get(step.node)     # library.py: CUDA kernels + cuBLAS
        if native is not None:
            native(out, ops)
            return
        # No CUDA implementation: the op's NumPy reference on the host (compile() warned,
        # naming the op).
        host = [a if isinstance(a, np.ndarray) else a.get() for a in ops]
        out[...] = self.xp.asarray(run_graph(step.body, host, bindings)[0])

