"""Native implementations of opaque ops for ``LibraryStep`` (Numba kernels + BLAS).

``LIBRARY`` maps an op name to its implementation. A ``LibraryStep`` whose body is one op
found here runs it directly on the runtime's arrays, writing into the step's output (no
interpreter, no intermediate copy); any other opaque op runs its NumPy reference through
the interpreter, and ``graphc.compile(g, backend="numba")`` says so once with a
:class:`LibraryFallbackWarning` naming those ops.

An implementation is ``source(node, body)``, the source of its Numba kernel module for the
node's dtypes (None: not supported here), and ``prepare(node, body, shared, module) ->
run(out, ops)``: ``prepare`` runs at compile time on the module loaded through the kernel
cache, ``run`` runs per call. ``sources(program)`` lists the modules a program needs, so
the backend can compile them beside its kernels in parallel (cache.precompile). Kernels
are serial Numba functions over a range of their outer loop that ``threads.split`` cuts
over the backend's threads when the work pays for the hand-off (a decode step calls them
on one token: one call on the calling thread); the few-pair MoE kernels of a decode step
stay ``numba.prange`` in the OpenMP pool (see templates.rows_gemm).

- ``rope``: cos/sin of ``positions[b, s] * inv_freq`` once per (sequence, position) (in
  the dtype of x, like the reference), then the rotation of the pairs (interleaved or
  rotate-half) of the first ``rotary_dim`` dims of every leading index, the rest copied.
- ``topk``: k selection passes per row (largest first, ties to the lower index, NaN last:
  the order of the reference's stable argsort).
- ``moe``: counting sort of the (token, slot) pairs by expert, one gather of the routed
  rows into expert order, per used expert two GEMMs (BLAS: ``gate_up`` then ``down``) on
  its contiguous block of rows, SwiGLU on all rows in one pass between them, and a combine
  that sums each token's K expert outputs times the routing weights in increasing expert
  order (the reference's order, so the sums round the same way). Work is K/E of the dense
  mixture; a decode step (one token) touches only its K experts' weights. The experts'
  GEMMs are one-thread BLAS calls, the sorted rows cut into equal parts per thread
  (an expert at a cut split between two; threads.py). With at most ``FEW_ROWS`` pairs
  (decode, short prompts) two parallel Numba kernels replace the sort, gather and
  GEMMs: SwiGLU of every pair, then the weighted
  down projections summed in increasing expert order.
- ``grouped_matmul``: one one-thread BLAS GEMM per non-empty group on its contiguous rows,
  the rows cut into one part per thread as ``moe``'s expert GEMMs are; rows past the last
  offset zeroed.
- ``sort`` and ``index_put``: the op's own NumPy function (a stable argsort, a fancy
  assignment or ``np.add.at``) called straight on the runtime's arrays, into the step's
  output (no interpreter, no Numba module: their source is ``""``). They serve the
  bookkeeping of MoE code that sorts tokens by expert (a few thousand integers), not
  bulk data.
"""
from __future__ import annotations

import warnings

import numpy as np

from graphc.errors import InputError
from graphc.ir.node import user_stacklevel

from . import gemm, threads
from .templates import fill
from .vmath import VMATH, sigmoid_fn


from graphc.errors import LibraryFallbackWarning  # noqa: E402,F401 (one class for all backends)


# moe with at most this many (token, expert) pairs (a decode step: one token, K pairs)
# skips the sort, gather and per-expert GEMMs: two parallel Numba kernels compute the
# pairs' SwiGLU and the weighted down projections as dot products over the expert
# weights in place, in the same thread pool as the step's other kernels. DeepSeek-V2 mini
# (32 experts [704|352 x 1024], K=4) on 2 cores, sorted + BLAS vs these kernels per
# layer: 32 pairs 6.6 vs 3.0 ms, 64 pairs 9.0 vs 6.5, 128 pairs 11.6 vs 12.7 (with few
# rows per expert, one-thread BLAS streams each expert's weights on one core).
FEW_ROWS = 64

_NB = {"float32": "float32", "float64": "float64", "int32": "int32", "int64": "int64"}


def _load(source: str):
    """The kernel module for ``source`` (through the content-addressed kernel cache)."""
    from .cache import load_module
    return load_module(source)[0]


# ---------------------------------------------------------------------------------------
# rope

_ROPE = '''import math
import numpy as np
import numba as nb


@nb.njit("void(__FT__[:, :, :, ::1], __PT__[:, ::1], __FT__[::1], float64, int64, int64, "
         "__FT__[:, :, :, ::1], int64, int64)", cache=True, nogil=True)
def rope(x, pos, inv, scale, r, half, out, lo, hi):
    """x, out [B, M, S, D], pos [P, S] (P = 1 or B); the (b, s) of flat index lo..hi
    of B * S. Pair i < r/2 of out[b, m, s]
    (x[i], x[i + r/2]) when half, else (x[2i], x[2i+1]) is that pair of x rotated by
    pos[b % P, s] * inv[i], cos and sin times scale (all in __FT__ like the reference);
    dims r..D are copied."""
    B, M, S, D = x.shape
    P = pos.shape[0]
    h = r // 2
    st = 1 if half else 2           # pair i is (st * i, st * i + off)
    off = h if half else 1
    sc = nb.__FT__(scale)
    for bs in range(lo, hi):
        b = bs // S
        s = bs - b * S
        ps = nb.__FT__(pos[b % P, s])
        cs = np.empty(h, nb.__FT__)
        sn = np.empty(h, nb.__FT__)
        for i in range(h):
            a = ps * inv[i]
            cs[i] = math.cos(a) * sc
            sn[i] = math.sin(a) * sc
        for m in range(M):
            for i in range(h):
                j = st * i
                x0 = x[b, m, s, j]
                x1 = x[b, m, s, j + off]
                out[b, m, s, j] = x0 * cs[i] - x1 * sn[i]
                out[b, m, s, j + off] = x0 * sn[i] + x1 * cs[i]
            for j in range(r, D):
                out[b, m, s, j] = x[b, m, s, j]
'''


def _rope_source(node, body):
    x_t, pos_t, _ = (body.nodes[i].type for i in node.inputs)
    if x_t.dtype not in ("float32", "float64") or pos_t.dtype not in _NB:
        return None
    return fill(_ROPE, "rope", FT=_NB[x_t.dtype], PT=_NB[pos_t.dtype])


def _rope(node, body, shared, mod):
    rope = mod.rope
    scale = float(node.attrs["scale"])
    half = int(node.attrs.get("layout", "interleaved") == "half")
    rotary_dim = node.attrs.get("rotary_dim")

    def run(out, ops):
        x, pos, inv = ops
        if x.size == 0:               # no rows (reshape(-1, ...) cannot tell how many)
            return
        S, D = x.shape[-2], x.shape[-1]
        r = D if rotary_dim is None else int(rotary_dim)
        # x [B, M, S, D]: B the first dim for positions [B, S] (or [1, S]), else 1
        B = x.shape[0] if pos.ndim == 2 else 1
        pos2 = np.ascontiguousarray(pos.reshape(-1, S))
        x4 = np.ascontiguousarray(x).reshape(B, -1, S, D)
        o = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
        o4 = o.reshape(x4.shape)
        threads.split(rope, x4.shape[0] * S, x.size, x4, pos2, np.ascontiguousarray(inv),
                      scale, r, half, o4)
        if o is not out:
            out[...] = o
    return run


# ---------------------------------------------------------------------------------------
# topk

_TOPK = '''import math
import numpy as np
import numba as nb


@nb.njit(inline="always")
def _better(a, b):
    # a ranks before b: larger, and any number before NaN (ties: the caller keeps the
    # lower index by scanning upwards with a strict comparison)
    if math.isnan(a):
        return False
    return math.isnan(b) or a > b


@nb.njit("void(__FT__[:, ::1], int64[:, ::1], __FT__[:, ::1], boolean)", cache=True,
         nogil=True)
def kernel(x, idx, vals, want_values):
    R, n = x.shape
    k = idx.shape[1]
    taken = np.zeros(n, np.bool_)
    for r in range(R):
        taken[:] = False
        for j in range(k):
            best = -1
            for i in range(n):
                if taken[i]:
                    continue
                if best < 0 or _better(x[r, i], x[r, best]):
                    best = i
            taken[best] = True
            idx[r, j] = best
            if want_values:
                vals[r, j] = x[r, best]
'''


def _topk_source(node, body):
    (x_t,) = (body.nodes[i].type for i in node.inputs)
    return _TOPK.replace("__FT__", _NB[x_t.dtype])


def _topk(node, body, shared, mod):
    (x_t,) = (body.nodes[i].type for i in node.inputs)
    attrs = dict(node.attrs)
    kernel = mod.kernel
    k, values = int(attrs["k"]), attrs["output"] == "values"
    dt = x_t.np_dtype
    empty_vals = np.empty((1, 1), dt)

    last = attrs["axis"] == x_t.rank - 1

    def run(out, ops):
        (x,) = ops
        n = x.shape[attrs["axis"]]
        if k > n:
            from graphc.ops.selection import topk
            out[...] = topk(x, **attrs)          # raises the reference's error
            return
        # another axis than the last: the rows are made contiguous (one copy each way)
        xr = x if last else np.ascontiguousarray(np.moveaxis(x, attrs["axis"], -1))
        o = out if last else np.empty(xr.shape[:-1] + (k,), out.dtype)
        x2 = xr.reshape(-1, n)
        if values:
            idx = np.empty((x2.shape[0], k), np.int64)
            kernel(x2, idx, o.reshape(-1, k), True)
        else:
            kernel(x2, o.reshape(-1, k), empty_vals, False)
        if not last:
            out[...] = np.moveaxis(o, -1, attrs["axis"])
    return run


# ---------------------------------------------------------------------------------------
# moe

_MOE = VMATH + '''


@nb.njit("int64(__IT__[:, ::1], int64, int64[::1], int64[::1], int64[::1])",
         cache=True, nogil=True)
def route(indices, E, offsets, order, slot):
    """Counting sort of the N*K (token, slot) pairs by expert (tokens ascending within
    an expert): offsets [E+1], order[p] = n*K + k of sorted position p, slot[n*K + k] = p.
    Returns the flat position of an out-of-range expert index, else -1."""
    N, K = indices.shape
    offsets[:] = 0
    for n in range(N):
        for k in range(K):
            e = indices[n, k]
            if e < 0 or e >= E:
                return n * K + k
            offsets[e + 1] += 1
    for e in range(E):
        offsets[e + 1] += offsets[e]
    cursor = offsets[:E].copy()
    for n in range(N):
        for k in range(K):
            e = indices[n, k]
            p = cursor[e]
            cursor[e] = p + 1
            order[p] = n * K + k
            slot[n * K + k] = p
    return -1


@nb.njit("void(__FT__[:, ::1], __IT__[:, ::1], __FT__[:, :, ::1], __FT__[:, ::1])",
         parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
def few_gate_up(x, indices, gate_up, h):
    """Few pairs: h[n*K + k] = SwiGLU of token n through expert indices[n, k], each value
    a dot product over a row of the expert's gate_up [2I, H] (read in place); the
    pairs' rows in blocks of 32 over the threads."""
    N, K = indices.shape
    I = h.shape[1]
    H = x.shape[1]
    blocks = (I + 31) // 32
    for t in nb.prange(N * K * blocks):
        p = t // blocks
        n = p // K
        e = indices[n, p % K]
        j0 = (t % blocks) * 32
        for j in range(j0, min(I, j0 + 32)):
            g = nb.__FT__(0)
            u = nb.__FT__(0)
            for i in range(H):
                g += gate_up[e, j, i] * x[n, i]
                u += gate_up[e, I + j, i] * x[n, i]
            h[p, j] = g * __SIGMOID__(g) * u


@nb.njit("void(__FT__[:, ::1], __IT__[:, ::1], __FT__[:, ::1], __FT__[:, :, ::1], "
         "__FT__[:, ::1])", parallel=True, cache=True, nogil=True,
         fastmath={"reassoc", "contract"})
def few_down(h, indices, w, down, out):
    """Few pairs: out[n, c] = sum_k w[n, k] * (down[indices[n, k]] @ h[n*K + k])[c], the
    K terms in increasing expert order (the reference's order); output columns in
    blocks of 32 over the threads."""
    N, K = indices.shape
    H = out.shape[1]
    I = h.shape[1]
    blocks = (H + 31) // 32
    for t in nb.prange(N * blocks):
        n = t // blocks
        ks = np.empty(K, np.int64)
        for k in range(K):             # insertion sort of the K slots by expert
            j = k
            while j > 0 and indices[n, ks[j - 1]] > indices[n, k]:
                ks[j] = ks[j - 1]
                j -= 1
            ks[j] = k
        c0 = (t % blocks) * 32
        for c in range(c0, min(H, c0 + 32)):
            total = nb.__FT__(0)
            for q in range(K):
                k = ks[q]
                d = nb.__FT__(0)
                for i in range(I):
                    d += down[indices[n, k], c, i] * h[n * K + k, i]
                total += d * w[n, k]
            out[n, c] = total


@nb.njit("void(__FT__[:, ::1], int64[::1], int64, __FT__[:, ::1], int64, int64)",
         cache=True, nogil=True)
def gather(x, order, K, xs, lo, hi):
    for p in range(lo, hi):
        n = order[p] // K
        for j in range(x.shape[1]):
            xs[p, j] = x[n, j]


@nb.njit("void(__FT__[:, ::1], __FT__[:, ::1], int64, int64)", cache=True, nogil=True)
def swiglu(gu, h, lo, hi):
    I = h.shape[1]
    for p in range(lo, hi):
        for j in range(I):
            g = gu[p, j]
            h[p, j] = g * __SIGMOID__(g) * gu[p, I + j]


@nb.njit("void(__FT__[:, ::1], int64[::1], __FT__[:, ::1], __FT__[:, ::1], int64, int64)",
         cache=True, nogil=True)
def combine(ys, slot, w, out, lo, hi):
    """out[n] = sum_k w[n, k] * ys[slot[n*K + k]] for tokens n in lo..hi, summed in
    increasing expert order (the sorted positions of a token's pairs increase with the
    expert)."""
    N, K = w.shape
    H = out.shape[1]
    for n in range(lo, hi):
        ps = np.empty(K, np.int64)
        ks = np.empty(K, np.int64)
        for k in range(K):          # insertion sort of the K positions
            p = slot[n * K + k]
            j = k
            while j > 0 and ps[j - 1] > p:
                ps[j] = ps[j - 1]
                ks[j] = ks[j - 1]
                j -= 1
            ps[j] = p
            ks[j] = k
        for c in range(H):
            out[n, c] = 0
        for q in range(K):
            wk = w[n, ks[q]]
            p = ps[q]
            for c in range(H):
                out[n, c] += ys[p, c] * wk
'''


def _moe_source(node, body):
    x_t, _, idx_t = (body.nodes[i].type for i in node.inputs[:3])
    return fill(_MOE, "route", FT=_NB[x_t.dtype], IT=_NB[idx_t.dtype],
                SIGMOID=sigmoid_fn(x_t.dtype))


def _moe(node, body, shared, mod):
    x_t = body.nodes[node.inputs[0]].type
    route = mod.route
    dt = x_t.np_dtype
    scratch = shared.setdefault("moe", {})   # one set of buffers for the program's steps

    def buffers(M, H, I, E):
        key = (dt.str, M, H, I, E)
        b = scratch.get(key)
        if b is None:
            if len(scratch) > 4:          # a few sizes (prefill lengths, decode) at most
                scratch.clear()
            b = scratch[key] = (np.empty(E + 1, np.int64), np.empty(M, np.int64),
                                np.empty(M, np.int64), np.empty((M, H), dt),
                                np.empty((M, 2 * I), dt), np.empty((M, I), dt),
                                np.empty((M, H), dt))
        return b

    def run(out, ops):
        x, w, indices, gate_up, down = ops
        N, H = x.shape
        K = indices.shape[1]
        E, I = gate_up.shape[0], down.shape[2]
        M = N * K
        if M == 0:
            out[...] = 0
            return
        offsets, order, slot, xs, gu, h, ys = buffers(M, H, I, E)
        bad = route(indices, E, offsets, order, slot)
        if bad >= 0:
            raise InputError(f"moe(): expert index {int(indices.ravel()[bad])} is out of "
                             f"range for {E} experts")
        if M <= FEW_ROWS and gate_up.flags.writeable and down.flags.writeable:
            mod.few_gate_up(x, indices, gate_up, h)      # OpenMP, like templates.rows_gemm
            mod.few_down(h, indices, w, down, out)
            return
        threads.split(mod.gather, M, M * H, x, order, K, xs)
        parts = _expert_groups(offsets, M * H * I)
        _expert_gemms(parts, xs, gate_up, gu)
        threads.split(mod.swiglu, M, M * I * 8, gu, h)          # ~8 operations each
        _expert_gemms(parts, h, down, ys)
        threads.split(mod.combine, N, M * H, ys, slot, w, out)
    return run


def _expert_groups(offsets, macs: int) -> list:
    """The used experts' rows cut into one part per thread with the same number of rows
    each (one part when the work is small): a part is a list of (expert, first row, end
    row); an expert at a cut has its rows split between two parts (cutting only between
    experts left one thread up to an expert's GEMM longer than the other)."""
    used = np.flatnonzero(offsets[1:] != offsets[:-1])
    k = threads.workers() if macs >= threads.SPLIT_MIN_MACS else 1
    total = int(offsets[-1])
    bounds = [total * i // k for i in range(k + 1)]
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = []
        for e in used:
            a, b = max(int(offsets[e]), lo), min(int(offsets[e + 1]), hi)
            if a < b:
                part.append((int(e), a, b))
        if part:
            parts.append(part)
    return parts


def _expert_gemms(parts, rows, weights, out, transposed=True) -> None:
    """out[r0:r1] = rows[r0:r1] @ weights[e].T (weights[e] when not ``transposed``) for
    every (e, r0, r1) of the parts (one one-thread BLAS call each), the parts on parallel
    threads."""
    def task(part):
        def run():
            for e, a, b in part:
                gemm.matmul(rows[a:b], weights[e].T if transposed else weights[e],
                            out[a:b])
        return run
    threads.run_parallel([task(p) for p in parts])


# ---------------------------------------------------------------------------------------
# grouped_matmul, sort, index_put: NumPy and BLAS on the runtime's arrays (no module)

def _no_module(node, body):
    return ""


def _grouped_matmul(node, body, shared, mod):
    from graphc.ops.moe import grouped_bounds
    transposed = bool(node.attrs["transpose_w"])

    def run(out, ops):
        x, w, offsets = ops
        S = x.shape[0]
        bounds = grouped_bounds(offsets, S)           # checks the offsets
        end = bounds[-1][2] if bounds else 0
        if end < S:
            out[end:] = 0
        if not bounds:
            return
        starts = np.zeros(w.shape[0] + 1, np.int64)
        starts[1:] = offsets
        parts = _expert_groups(starts, end * x.shape[1] * out.shape[1])
        _expert_gemms(parts, x, w, out, transposed)
    return run


def _reference_op(node, body, shared, mod):
    """The op's own NumPy function, called on the runtime's arrays into the output."""
    from graphc.ops.registry import get_op
    reference, attrs = get_op(node.op).reference, dict(node.attrs)

    def run(out, ops):
        out[...] = reference(*ops, **attrs)
    return run


# op -> (source(node, body): the kernel module's source, "" for none, None when the node
# is not supported; prepare(node, body, shared, module or None) -> run(out, ops))
LIBRARY = {"rope": (_rope_source, _rope), "topk": (_topk_source, _topk),
           "moe": (_moe_source, _moe), "grouped_matmul": (_no_module, _grouped_matmul),
           "sort": (_no_module, _reference_op), "index_put": (_no_module, _reference_op)}


# ---------------------------------------------------------------------------------------

def _native(step):
    """(node, source, prepare) for a LibraryStep whose body is one op with a native
    implementation (its inputs the body's inputs in order), else None."""
    node = step.single_op()
    entry = None if node is None else LIBRARY.get(node.op)
    if entry is None:
        return None
    source = entry[0](node, step.body)
    return None if source is None else (node, source, entry[1])


def sources(program) -> list[str]:
    """The kernel module sources the program's library steps will load, and the masked
    attention softmax modules its masked attention steps will (for cache.precompile)."""
    from graphc.lower.program import AttentionStep, LibraryStep
    from .runtime import masked_key
    from .templates import attention_softmax
    found = [_native(s) for s in program.steps if isinstance(s, LibraryStep)]
    masked = [attention_softmax(*masked_key(s)) for s in program.steps
              if isinstance(s, AttentionStep) and s.mask is not None]
    return list(dict.fromkeys([f[1] for f in found if f is not None and f[1]] + masked))


def bind(step, shared: dict | None = None):
    """``run(out, ops)`` for a LibraryStep whose body is one op with a native
    implementation (its inputs the body's inputs in order), else None."""
    native = _native(step)
    if native is None:
        return None
    node, source, prepare = native
    run = prepare(node, step.body, {} if shared is None else shared,
                  _load(source) if source else None)

    def run_contiguous(out, ops):
        run(out, [o if o.flags.c_contiguous else np.ascontiguousarray(o) for o in ops])
    return run_contiguous


def op_names(step) -> str:
    """The ops of a LibraryStep body, for messages."""
    return "+".join(n.op for n in step.body.nodes.values() if n.op != "input")


def bind_program(program) -> dict:
    """Native runners by step node id; warns once naming the ops left to NumPy."""
    from graphc.lower.program import LibraryStep
    runners, numpy_ops, shared = {}, [], {}
    for step in program.steps:
        if not isinstance(step, LibraryStep):
            continue
        run = bind(step, shared)
        if run is None:
            numpy_ops.append(op_names(step))
        else:
            runners[step.node] = run
    if numpy_ops:
        names = sorted(set(numpy_ops))
        warnings.warn(f"numba backend: {', '.join(names)} ha{'ve' if len(names) > 1 else 's'}"
                      " no native implementation here and run{} through the NumPy reference "
                      "(slow: interpreted, one copy per call)".format("" if len(names) > 1
                                                                      else "s"),
                      LibraryFallbackWarning, stacklevel=user_stacklevel())
    return runners
