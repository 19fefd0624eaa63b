"""Running a lowered Program on the CPU (graphc.runtime.program does the walking): BLAS
for GEMMs (one thread per call, large ones split over the backend's threads: threads.py),
Numba kernels for few-row GEMMs (a decode step: templates.rows_gemm) and the rest,
blockwise attention with a score block per 128 query rows (a large one's heads split over
the threads)."""
from __future__ import annotations

import functools
import math

import numpy as np

from graphc.ir.dims import evaluate
from graphc.lower import loopir as L
from graphc.runtime.interpreter import run_graph
from graphc.lower.program import AttentionStep
from graphc.runtime.program import ProgramExecutable

from .cache import load_module
from .render import function_sizes, split_loop, work

from . import gemm, threads
from . import templates
from .templates import SOFTMAX_PARALLEL_MIN

ATTENTION_BLOCK = 128   # query rows per block: the score block is [heads, 128, T]
# A mask value at or below this (-inf, or the float32 minimum that Hugging Face's and the
# exporters' masks use) gives its key a softmax weight of exactly 0 in every row that has
# one key above it (exp underflows to 0 unless the scores themselves are ~1e29): such
# trailing keys of a block of rows are not computed at all (a causal mask written as a
# tensor costs half). Masks this small, or of one block of rows, are not looked at.
MASKED = -1e30
# Where one head's score block [128, T] is at least this many bytes, a thread does its
# heads one at a time (the block is written, normalised and read back: all heads' blocks
# at once would leave L2). [12, 2048, 64] attention 114-125 -> 104-115 ms; at T = 512
# one head at a time was slower (7.6 -> 8.5 ms: more, smaller GEMMs), so not there.
HEAD_BLOCK_BYTES = 1 << 19
KEY_LIMITS_MIN = 1 << 16

# ``x @ W.T`` with at most this many rows of x runs templates.rows_shared_t (each weight
# row read once for all rows) instead of BLAS, which packs the weight on every call: the
# lm_head of DeepSeek-V2 mini at 8 rows 20.0 -> 13.5 ms on one thread, 2-16 rows cost
# BLAS nearly what 16 do (docs/deepseek_v2.md, batched generation).
FEW_ROWS = 8
# A batched GEMM [B, m, K] @ [B, K, N] with at most this many multiply-adds per entry
# (m * K * N) runs templates.rows_batched(_t), one entry per thread task, instead of a
# BLAS call per entry: a decode step's per-head products (16 heads of [8, 64] x [64,
# 256] in a batch of 8: 0.60 ms through BLAS calls, one by one)
BATCHED_MACS = 1 << 18


class NumbaExecutable(ProgramExecutable):
    backend = "numba"

    def __init__(self, graph, program, kernels, functions, attention_softmax, rows=None):
        super().__init__(graph, program, kernels)
        self.functions = functions        # name -> compiled function
        self.attention_softmax = attention_softmax  # scores dtype -> softmax module
        self.rows = rows or {}            # dtype -> module of the one-row GEMMs
        self.tiles = {}                   # dtype -> module of the tiled few-row GEMMs
        # name -> the loop split over the threads, for the kernels rendered over a range
        # of it (render.split_loop)
        self.splits = {name: loop for name, k in kernels.items()
                       if (loop := split_loop(k)) is not None}
        # name -> the positions in kernel.sizes of the sizes its function takes, where
        # it takes fewer (render.function_sizes: those of the split loop's extent alone
        # are not passed)
        self.size_pick = {}
        for name, k in kernels.items():
            taken = function_sizes(k)
            if taken != list(k.sizes):
                self.size_pick[name] = tuple(k.sizes.index(s) for s in taken)
        # (scores dtype, mask kind) -> the masked score softmax (library.sources lists
        # these modules for the parallel compile, so loading them is a cache hit)
        self.masked_softmax = {
            key: load_module(templates.attention_softmax(*key))[0]
            for key in {masked_key(st) for st in program.steps
                        if isinstance(st, AttentionStep) and st.mask is not None}}

    def _run(self, arrays, bindings, timer=None):
        # NumPy's BLAS on one thread while the call runs (threads.py); the split GEMMs
        # and the kernels' OpenMP pool use the cores.
        try:
            threads.blas_enter()
            return super()._run(arrays, bindings, timer)
        finally:
            threads.blas_exit()

    def matmul(self, a, b, out):
        """Few rows against a weight (``x @ W.T`` with up to FEW_ROWS rows: a decode
        step, a batched one), one row per batch entry against a shared weight, and
        batched GEMMs of few multiply-adds per entry (a decode step's per-head
        products): the Numba kernels of templates.rows_gemm (OpenMP); anything else:
        BLAS, split over the threads when large (threads.py)."""
        dt = str(out.dtype)
        if not (dt in ("float32", "float64") and a.ndim >= 2 and b.ndim >= 2
                and a.dtype == b.dtype == out.dtype and a.flags.writeable
                and b.flags.writeable and out.flags.c_contiguous):
            threads.matmul(a, b, out)
            return
        m, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
        call = None
        if b.ndim == 2 and m <= FEW_ROWS and a.flags.c_contiguous:
            # x [.., m, K] @ W [K, N], all rows one block: a decode step (m = 1, its
            # heads as the rows [nh, 1, K]), a batched one (m rows)
            n = math.prod(a.shape[:-1])
            a2, o2 = a.reshape(n, K), out.reshape(n, N)
            if b.flags.f_contiguous and m > 1 and n <= FEW_ROWS:
                call = "tiles", "tiled_t", a2, b.T, o2
            elif b.flags.f_contiguous and m == 1:
                call = "rows", "rows_shared_t", a2, b.T, o2
            elif b.flags.c_contiguous and m == 1:
                call = "rows", "rows_shared", a2, b, o2
        elif (a.ndim == b.ndim == out.ndim == 3 and a.shape[0] == b.shape[0]
                and m * K * N <= BATCHED_MACS):
            if b.flags.c_contiguous:
                call = "rows", "rows_batched", a, b, out
            elif m > 1 and (bt := b.transpose(0, 2, 1)).flags.c_contiguous:
                call = "tiles", "tiled_batched_t", np.ascontiguousarray(a), bt, out
        if call is None:
            threads.matmul(a, b, out)
            return
        getattr(self.few_rows_module(call[0], dt), call[1])(*call[2:])

    def few_rows_module(self, kind: str, dt: str):
        """The module of templates.rows_gemm ("rows") or templates.tiles_gemm ("tiles")
        for ``dt``. A graph whose row count is symbolic has no rows module compiled with
        it (most such graphs never see few rows), and no graph has the tiles module
        (~5 s to compile, which a one-row decode step does not need): loaded at the
        first call that takes it (a cache hit after the first process that compiled
        it)."""
        mods = self.rows if kind == "rows" else self.tiles
        mod = mods.get(dt)
        if mod is None:
            source = templates.rows_gemm(dt) if kind == "rows" else templates.tiles_gemm(dt)
            mod = mods[dt] = load_module(source)[0]
        return mod

    def gemm_run(self, steps, vals, sz, outputs) -> bool:
        """Sibling GEMMs (program.gemm_runs: q, k and v of one input; gate and up) at
        once, each on one thread, the threads' loads balanced by multiply-adds, then
        their epilogues in order: one hand-off for the run instead of one or two per
        GEMM, and no GEMM cut in halves that each pack the whole of the other operand
        ([256, 512] x [512, 256] split in two ran no faster than on one thread). Where
        the loads do not balance (within GEMM_RUN_BALANCE), a GEMM has few rows (the
        decode kernels), or a product's memory overlaps another's operands (the memory
        plan reuses a buffer once its last reader ran: that order is gone when they run
        at once), each runs as its own step (False). Decided once per size."""
        n = threads.workers()
        if n < 2:
            return False
        parts = [self.gemm_operands(st, vals, sz, outputs) for st in steps]
        key = ("gemm run", steps[0].node)
        plan = sz.memo.get(key)
        if plan is None:
            plan = sz.memo[key] = _gemm_run_plan(parts, n)

        def task(idx):
            return lambda: [threads.matmul(parts[i][2], parts[i][3], parts[i][4], False)
                            for i in idx]
        if plan:
            threads.run_parallel([task(idx) for idx in plan])
        for st, (out, _, a, b, acc) in zip(steps, parts):
            if not plan:                      # one by one (each split on its own)
                self.matmul(a, b, acc)
            if st.epilogue is not None:   # its operands now all computed
                self.kernel(st.epilogue, [vals[o] for o in st.operands], out, acc, sz)
            vals[st.node] = out
        return True

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
        fn = self.functions[kernel.name]
        sizes = sz.size_args[kernel.name]
        pick = self.size_pick.get(kernel.name)
        args = (*self.kernel_args(kernel, ops, out, acc),
                *(sizes if pick is None else (sizes[i] for i in pick)))
        split = self.splits.get(kernel.name)
        if split is None:                     # a kernel that runs as it is
            fn(*args)
            return
        n = threads.workers()
        rs = sz.memo.get((kernel.name, n))
        if rs is None:   # the split loop's ranges for these sizes, worked out once
            env = dict(zip(kernel.sizes, sz.size_args[kernel.name]))
            extent = int(L.evaluate(split.extent, env))
            per_row = work(split.body, env)          # None: not known, taken as large
            total = extent * (per_row if per_row is not None else threads.SPLIT_MIN_WORK)
            rs = sz.memo[(kernel.name, n)] = threads.ranges(extent, total, n)
        threads.run_ranges(fn, rs, *args)

    def attention(self, step, ops, out, sz):
        q, k, v, mask = self.attention_operands(step, ops, sz)
        # the output view when BLAS can write it (unit-stride rows), else scratch + a copy
        o = self.attention_output(step, out, sz, _blas_writable)
        if o.size == 0:               # no query rows (or heads, or value dims): nothing to
            self.finish_attention(step, ops, out, o, sz)         # compute (and no memory
            return                                               # for a view to share)
        S, T, D = q.shape[-2], k.shape[-2], q.shape[-1]
        rows = min(ATTENTION_BLOCK, S)
        scale, causal, fill = float(step.scale), bool(step.causal), float(step.mask_fill)
        cap = float(step.softcap)
        if cap:             # c * tanh(s * scale / c) in place; the softmax scales by 1
            cap_in, scale = scale / cap, 1.0

            def capped(blk):
                np.multiply(blk, blk.dtype.type(cap_in), out=blk)
                np.tanh(blk, out=blk)
                np.multiply(blk, blk.dtype.type(cap), out=blk)
        limits = None           # from the mask as given, before grouped() broadcasts it
        if mask is not None and S > rows and S * T >= KEY_LIMITS_MIN and \
                (not step.mask_bool or fill <= MASKED):
            limits = key_limits(mask, step.mask_bool, S, T)
        o_step = o
        q, k, v, o, mask = grouped(q, k, v, o, mask)
        batch = q.shape[:-2]
        N = int(np.prod(batch)) if batch else 1
        scores = sz.scratch[("scores", step.node)]
        inv = sz.scratch[("inv", step.node)]
        mod = (self.attention_softmax[str(scores.dtype)] if mask is None
               else self.masked_softmax[masked_key(step)])
        diag = T - S

        def pick(x, idx):       # entry idx of the batch (dims of 1 broadcast)
            return x[tuple(0 if x.shape[d] == 1 else i for d, i in enumerate(idx))][None]

        def blocks(qp, kp, vp, op, mp, off, matmul, softmax_for, one_head=False):
            """The heads of the views qp .. op (a part of the batch, or all of it), 128
            query rows at a time, in scratch from head ``off`` on: the key-major score
            block k @ q^T [.., keys, rows] (templates.attention_softmax), its softmax
            over each column, then P @ V with P^T read as a transposed operand. With
            ``one_head``, a block's heads one after another in the same scratch (the
            mask block made key-major once for all of them)."""
            bs = qp.shape[:-2]
            n = int(np.prod(bs)) if bs else 1
            m4 = mask4(mp) if mp is not None else None
            if S == 1 and n > 1 and not one_head:
                one_row(qp, kp, vp, op, m4, off, matmul, softmax_for, bs, n)
                return
            heads = list(np.ndindex(*bs)) if one_head else [None]
            for r0 in range(0, S, rows):
                r1 = min(S, r0 + rows)
                kend = T if not causal else max(0, min(T, r1 + diag))
                if limits is not None:
                    kend = min(kend, int(limits[r0:r1].max(initial=0)))
                if m4 is not None:
                    mk, M2 = _key_major(m4[:, :, r0:r1, :kend], mod.key_major)
                for h, idx in enumerate(heads):
                    if idx is None:
                        qh, kh, vh, oh, hs, nh = qp, kp, vp, op, bs, n
                    else:
                        qh, kh, vh, oh = (pick(x, idx) for x in (qp, kp, vp, op))
                        hs, nh = (1,), 1
                    blk = np.ndarray(hs + (kend, r1 - r0), scores.dtype, buffer=scores,
                                     offset=off * rows * T * scores.itemsize)
                    inv_blk = np.ndarray(hs + (r1 - r0,), inv.dtype, buffer=inv,
                                         offset=off * rows * inv.itemsize)
                    matmul(kh[..., :kend, :], np.swapaxes(qh[..., r0:r1, :], -1, -2), blk)
                    if cap:
                        capped(blk)
                    b3, i2 = blk.reshape(nh, kend, r1 - r0), inv_blk.reshape(nh, r1 - r0)
                    if m4 is None:
                        extra = ()
                    elif idx is None:
                        extra = (mk, M2, fill)
                    else:         # head h's mask block (its entry of the M1 x M2 grid)
                        e1 = h // M2 if mk.shape[0] > 1 else 0
                        e2 = h % M2 if mk.shape[1] > 1 else 0
                        extra = (mk[e1:e1 + 1, e2:e2 + 1], 1, fill)
                    softmax_for(b3)(b3, i2, scale, causal, r0, diag, *extra, 0, r1 - r0)
                    matmul(np.swapaxes(blk, -1, -2), vh[..., :kend, :], oh[..., r0:r1, :])
                    oh[..., r0:r1, :] *= inv_blk[..., None]

        def one_row(qp, kp, vp, op, m4, off, matmul, softmax_for, bs, n):
            """blocks() for one query row (a decode step): the n heads' scores in one
            key-major block [keys, heads], head b's down column b (its GEMM writes that
            strided view), so the softmax's column loops run along the heads (one row's
            own column would be one element wide). Every key is visible to the row: a
            causal mask, with T >= S, hides none."""
            kend = T if limits is None else min(T, int(limits[:1].max(initial=0)))
            buf = np.ndarray((kend, n), scores.dtype, buffer=scores,
                             offset=off * rows * T * scores.itemsize)
            blk = buf.T.reshape(bs + (kend, 1))                 # a view: strides (.., 1, n)
            inv_blk = np.ndarray((1, n), inv.dtype, buffer=inv,
                                 offset=off * rows * inv.itemsize)
            matmul(kp[..., :kend, :], np.swapaxes(qp, -1, -2), blk)
            if cap:
                capped(buf)
            extra = ()
            if m4 is not None:   # [M1, M2, 1, keys] of the n heads -> [1, 1, keys, heads]
                mk = np.ascontiguousarray(
                    np.broadcast_to(m4[:, :, 0, :kend], m4.shape[:2] + (kend,))
                    .reshape(n, kend).T)[None, None]
                extra = (mk, 1, fill)
            s3 = buf.reshape(1, kend, n)
            softmax_for(s3)(s3, inv_blk, scale, False, 0, 0, *extra, 0, n)
            matmul(np.swapaxes(blk, -1, -2), vp[..., :kend, :], op)
            op *= inv_blk.reshape(bs + (1, 1))

        def one_thread(a, b, c):
            gemm.matmul(a, b, c)

        def each_head(qp, kp, vp, op, mp, off):
            """blocks() on one thread; one head (batch entry) at a time when a head's
            score block is large (HEAD_BLOCK_BYTES), so it stays in cache between its
            three passes (written, normalised, read back)."""
            bs = qp.shape[:-2]
            n = int(np.prod(bs)) if bs else 1
            blocks(qp, kp, vp, op, mp, off, one_thread, lambda blk: mod.softmax,
                   one_head=n > 1 and rows * T * scores.itemsize >= HEAD_BLOCK_BYTES)

        n_thr = threads.workers() if N * S * T * D >= threads.SPLIT_MIN_MACS else 1
        # the batch dim the heads are split along: the longest
        ax = int(np.argmax(batch)) if batch else None
        E = batch[ax] if batch else 1
        if n_thr > 1 and (E % n_thr == 0 or E >= 4 * n_thr):
            # heads split over the threads, each running all its row blocks (one-thread
            # GEMMs, the serial softmax): one hand-off per call, not three per block
            def part(x, lo, hi):
                if x is None or x.shape[ax] != E:
                    return x             # broadcast along the split dim (kv heads, mask)
                return x[(slice(None),) * ax + (slice(lo, hi),)]
            tasks, off = [], 0
            for lo, hi in threads.parts(E, n_thr):
                tasks.append(lambda lo=lo, hi=hi, off=off: each_head(
                    part(q, lo, hi), part(k, lo, hi), part(v, lo, hi), part(o, lo, hi),
                    part(mask, lo, hi), off))
                off += N // E * (hi - lo)
            threads.run_parallel(tasks)
        else:   # every head at once, each block's GEMMs and softmax split in turn
            blocks(q, k, v, o, mask, 0, threads.matmul, lambda blk: functools.partial(
                split_softmax, mod.softmax, mask is not None)
                if blk.size >= SOFTMAX_PARALLEL_MIN else mod.softmax)
        self.finish_attention(step, ops, out, o_step, sz)


# A run of sibling GEMMs goes over the threads at once only when the busiest thread's
# multiply-adds are at most this much above an even share (else each is split on its own).
GEMM_RUN_BALANCE = 1.25


def _gemm_run_plan(parts, n: int):
    """The GEMMs of ``parts`` ((out, ops, a, b, acc) each) dealt to ``n`` threads (the
    largest first, each to the least loaded thread): a list of index lists, or () when
    they should run one by one (see NumbaExecutable.gemm_run)."""
    if any(a.ndim < 2 or b.ndim < 2 or a.shape[-2] <= FEW_ROWS for _, _, a, b, _ in parts):
        return ()
    for i, (out, ops, a, b, acc) in enumerate(parts):
        written = [x for x in (out, acc) if isinstance(x, np.ndarray)]
        for j, other in enumerate(parts):
            if i == j:
                continue
            read = [x for x in (*other[1], other[2], other[3], other[0], other[4])
                    if isinstance(x, np.ndarray)]
            if any(np.may_share_memory(w, r) for w in written for r in read):
                return ()
    work = [threads.macs(a, b, acc) for _, _, a, b, acc in parts]
    if sum(work) < threads.SPLIT_MIN_MACS:
        return ()
    loads, plan = [0] * n, [[] for _ in range(n)]
    for i in sorted(range(len(parts)), key=lambda i: -work[i]):
        t = loads.index(min(loads))
        loads[t] += work[i]
        plan[t].append(i)
    if max(loads) > GEMM_RUN_BALANCE * sum(work) / n:
        return ()
    return [sorted(p) for p in plan if p]


def split_softmax(fn, masked, s, inv, scale, causal, row0, diag, *args):
    """The score-block softmax ``fn`` (templates.attention_softmax) on the key-major
    block s [B, T, R] split over the threads: by whole block entries (rows of the
    entries' M1 x M2 grid, when masked) where there are enough, else by query rows (the
    kernel's lo..hi). ``args``: (mask, M2, fill) when masked, then the query rows lo, hi."""
    B = s.shape[0]
    mask, (lo, hi) = args[:-2], args[-2:]
    k = threads.workers()
    M2 = mask[1] if masked else 1
    M1 = B // M2
    if k < 2 or max(M1, hi - lo) < 2:
        fn(s, inv, scale, causal, row0, diag, *args)
        return
    if M1 >= k:
        def part(a, b):
            extra = ((mask[0][a:b] if mask[0].shape[0] > 1 else mask[0]), *mask[1:]) \
                if masked else ()
            return lambda: fn(s[a * M2:b * M2], inv[a * M2:b * M2], scale, causal, row0,
                              diag, *extra, lo, hi)
        threads.run_parallel([part(a, b) for a, b in threads.parts(M1, k)])
        return
    # parts of whole cache lines of the score rows (16 float32s), which both threads write
    threads.run_parallel([
        functools.partial(fn, s, inv, scale, causal, row0, diag, *mask, lo + a, lo + b)
        for a, b in threads.parts(hi - lo, min(k, hi - lo), 16)])


def key_limits(mask, is_bool: bool, S: int, T: int):
    """For each of the S query rows, from the mask [..., R, T] (R = S, or 1 for a mask
    over the keys only): one past the last key any batch entry lets the row see, or T
    where some batch entry masks the whole row (its softmax is then not over the kept
    keys: uniform over all of them, or NaN). A key past the limit has weight exactly 0
    for that row in every batch entry (MASKED)."""
    allowed = mask if is_bool else mask > MASKED
    R = allowed.shape[-2]
    a = allowed.reshape((-1, R, T))
    # argmax of a row with no key allowed is 0: its limit is T, as it must be
    lim = (T - np.argmax(a[..., ::-1], axis=-1)).max(axis=0)
    return lim if R == S else np.broadcast_to(lim, (S,))


def _key_major(m, transpose):
    """The mask block m [M1, M2, R, T] (mask4's view: stride 0 along what it broadcasts
    over) as the masked softmax reads it (templates.attention_softmax): its distinct
    blocks, key-major and C-contiguous, [U1, U2, T, R] (U1 = 1 where m broadcasts over
    M1, U2 likewise), with R = 1 where m broadcasts over the query rows (a padding
    mask); and M2. A causal mask tensor's block is transposed (``transpose``: the
    module's key_major) once for all the heads it applies to."""
    u = m[tuple(slice(None) if st else slice(0, 1) for st in m.strides[:2])]
    if m.strides[2] == 0 or m.shape[2] == 1:
        return np.ascontiguousarray(np.swapaxes(u[:, :, :1, :], -1, -2)), m.shape[1]
    c = np.empty(u.shape[:2] + (m.shape[3], m.shape[2]), m.dtype)
    transpose(u, c)
    return c, m.shape[1]


def _blas_writable(o) -> bool:
    """BLAS writes a view whose rows have unit stride (any row and batch strides)."""
    return o.strides[-1] == o.itemsize and all(st >= 0 for st in o.strides)


def masked_key(step) -> tuple:
    """(scores dtype, mask kind) of a masked AttentionStep: its softmax module."""
    return (step.acc_dtype, "bool" if step.mask_bool else "add")


def grouped(q, k, v, o, mask):
    """The attention operands with NumPy broadcasting doing grouped-query attention:
    every batch dim where k or v has fewer entries than q (n = a * g query heads, head
    i reading kv head i // g) is split in two, (a, g) in q, the output and the mask,
    (a, 1) in k and v, all views (splitting a dim never copies), so a GEMM reads each
    kv head for its whole group. k and v are given q's number of batch dims (leading
    1s), the mask is broadcast (a view) to the scores. A k and v grouped differently
    (both dividing q's dim, unequal) would need two splits: v is repeated instead."""
    batch = q.shape[:-2]
    nb = len(batch)

    def lead(x):
        return x.reshape((1,) * (nb + 2 - x.ndim) + x.shape)
    k, v = lead(k), lead(v)
    mask = lead(mask) if mask is not None else None
    dims = {"q": [], "k": [], "v": [], "m": []}
    for i, n in enumerate(batch):
        groups = {x.shape[i] for x in (k, v) if x.shape[i] not in (1, n)}
        if len(groups) > 1:                           # k and v grouped differently
            v = np.repeat(v, n // v.shape[i], axis=i)
            groups = {k.shape[i]}
        if not groups:
            dims["q"].append((n,))
            dims["k"].append((k.shape[i],))
            dims["v"].append((v.shape[i],))
            if mask is not None:
                dims["m"].append((mask.shape[i],))
            continue
        (a,) = groups
        g = n // a

        def split(m):
            return (1, 1) if m == 1 else (a, 1) if m == a else (a, g)
        dims["q"].append((a, g))
        dims["k"].append(split(k.shape[i]))
        dims["v"].append(split(v.shape[i]))
        if mask is not None:
            dims["m"].append(split(mask.shape[i]))

    def shaped(x, key):
        """x with its batch dims split as ``dims[key]`` says: dim (n, stride s) becomes
        (a, g) with strides (g * s, s), a view (the output must be one: it is written)."""
        shape, strides = [], []
        for ds, n, st in zip(dims[key], x.shape[:-2], x.strides[:-2]):
            shape += ds
            strides += [ds[1] * st, st] if len(ds) == 2 else [st]
        return np.lib.stride_tricks.as_strided(x, tuple(shape) + x.shape[-2:],
                                               tuple(strides) + x.strides[-2:],
                                               writeable=x.flags.writeable)
    q2, k2, v2, o2 = shaped(q, "q"), shaped(k, "k"), shaped(v, "v"), shaped(o, "q")
    if mask is not None:
        mask = np.broadcast_to(shaped(mask, "m"), q2.shape[:-2] + (q.shape[-2], k.shape[-2]))
    return q2, k2, v2, o2, mask


def mask4(m):
    """The mask view m [..., R, T] (any strides, 0 where it broadcasts) as a 4-D view
    [M1, M2, R, T] with the same row-major order of its batch entries: batch dims merged
    where their strides allow (a padding mask [B, 1, 1, T] over [B, H] heads: strides
    (T, 0), kept as two); a copy in the rare layouts that need more than two."""
    merged = []
    for n, st in zip(m.shape[:-2], m.strides[:-2]):
        if n == 1:
            continue
        if merged and merged[-1][1] == st * n:
            merged[-1] = (merged[-1][0] * n, st)
        else:
            merged.append((n, st))
    if len(merged) > 2:
        return np.ascontiguousarray(m).reshape((1, -1) + m.shape[-2:])
    merged = [(1, 0)] * (2 - len(merged)) + merged
    return np.lib.stride_tricks.as_strided(
        m, tuple(n for n, _ in merged) + m.shape[-2:],
        tuple(st for _, st in merged) + m.strides[-2:], writeable=False)
