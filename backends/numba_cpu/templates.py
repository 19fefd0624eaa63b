"""Hand-written Numba kernels the templates use (loaded through the kernel cache)."""
from .vmath import VMATH, exp_fn


def fill(template: str, kernel: str, **subs) -> str:
    """The template's source with its ``__X__`` placeholders replaced by ``subs[X]`` and
    ``kernel`` (what the cache returns) naming one of its functions. Most templates are
    serial Numba functions whose calls the runtime splits over its own threads
    (threads.split), by a range lo..hi of their outer loop that they take as their last
    two arguments; the one-row GEMMs (rows_gemm) and the decode step's few-pair MoE
    kernels stay ``numba.prange``."""
    out = template + f"\nkernel = {kernel}\n"
    for k, v in subs.items():
        out = out.replace(f"__{k}__", v)
    return out


# The row max of both score softmaxes (part of their modules' source).
_ROW_MAX = '''
@nb.njit(inline="always", fastmath=__FLAGS__)
def _row_max(row, limit, sc, lanes):
    """max over j < limit of row[j] * sc, NaN ignored (v > m is false for a NaN; the row
    sum makes that row NaN later), 16 lanes at a time into ``lanes`` [16]: a running max
    through a select is not vectorised as a reduction without the no-NaN flag, a
    lane-wise max is (a 128 x 2048 block's softmax 245 -> 170 us)."""
    for l in range(16):
        lanes[l] = -np.inf
    n16 = limit // 16
    for c in range(n16):
        ch = row[c * 16:(c + 1) * 16]
        for l in range(16):
            v = ch[l] * sc
            lanes[l] = v if v > lanes[l] else lanes[l]
    m = lanes[0]
    for l in range(1, 16):
        m = lanes[l] if lanes[l] > m else m
    for j in range(n16 * 16, limit):
        v = row[j] * sc
        m = v if v > m else m
    return m
'''

# The score-block softmax, for __FT__ scores. float32: vmath's _exp32, which the compiler
# vectorises (libm's expf per element it does not: 2.67 -> 0.7-0.9 ms on a 16 x 128 x 512
# causal block), with ``reassoc`` so the row max and sum vectorise too; no flag assumes
# away NaN or infinities (a NaN score makes its row's sum NaN; masked keys come out
# exactly 0). float64: libm's exp and no fast-math flags (the oracle's precision).
# One serial function (``softmax``, the module's ``kernel``): the runtime splits a block
# of at least SOFTMAX_PARALLEL_MIN scores by score rows or query rows over its threads
# (runtime.split_softmax; a smaller one runs on the calling thread: handing a part over
# costs more than the work). A prange copy beside it cost 1.3 s more of Numba compile per
# module (2.1 vs 0.8 s of CPU).
SOFTMAX_PARALLEL_MIN = 1 << 15

_ATTENTION_SOFTMAX = VMATH + _ROW_MAX + '''

@nb.njit("void(__FT__[:, :, ::1], __FT__[:, ::1], float64, boolean, int64, int64)",
         cache=True, nogil=True, fastmath=__FLAGS__)
def softmax(s, inv_sum, scale, causal, row0, diag):
    """In place on a block of scores s [B, R, T] (query rows row0 .. row0+R): scale, mask
    keys j > row + diag when causal, exp(x - row max). Masked entries become 0. The row
    normalisation 1/sum goes to inv_sum [B, R]: it is applied to the [R, dv] output of
    P @ V instead of to the [R, T] scores (one pass over the scores less). The row sum
    is accumulated per chunk of 256 keys in the scores' dtype (a float32 sum vectorises:
    a float64 one, converting every element, made the pass 2x slower) and the chunks in
    float64, so long rows keep their precision."""
    B, R, T = s.shape
    sc = nb.__FT__(scale)
    lanes = np.empty(16, nb.__FT__)
    for p in range(B * R):
        b = p // R
        r = p % R
        limit = T
        if causal:        # >= 1: the runtime checks T >= S (diag >= 0) before any call
            limit = min(T, row0 + r + diag + 1)
        row = s[b, r]
        m = _row_max(row, limit, sc, lanes)
        total = 0.0
        full = limit // 256
        for c in range(full):         # loops from 0 over a slice vectorise (a range(a, b)
            ch = row[c * 256:(c + 1) * 256]     # loop here was 4-8x slower)
            part = nb.__FT__(0)
            for j in range(256):
                e = __EXP__(ch[j] * sc - m)
                ch[j] = e
                part += e
            total += part
        tail = row[full * 256:limit]
        part = nb.__FT__(0)
        for j in range(tail.shape[0]):
            e = __EXP__(tail[j] * sc - m)
            tail[j] = e
            part += e
        total += part
        inv_sum[b, r] = nb.__FT__(1.0 / total)
        row[limit:] = 0
'''

# The same softmax for a masked attention (a module of its own, loaded only by programs
# whose attention has a mask): the mask block is a 4-D view [M1, M2, R, T] of any
# strides (0 where the mask broadcasts: a padding mask [B, 1, 1, T] over B x H heads),
# score row b reading mask[b // M2, b % M2]. An additive mask is added to the scaled
# scores; a bool mask keeps a score where it is True and puts ``fill`` (-inf, or the
# finite value a model fills with) where it is False. A row masked whole comes out NaN,
# as the reference's softmax gives (0/0); with a finite fill, uniform.
_ATTENTION_SOFTMAX_MASKED = VMATH + _ROW_MAX + '''

_MASK = nb.types.Array(nb.__MT__, 4, "A", readonly=True)


@nb.njit(inline="always", fastmath=__FLAGS__)
def _exp_sum(row, limit, m):
    """row[j] = exp(row[j] - m) for j < limit, 0 after it; the sum (as above: per chunk
    of 256 keys in the row's dtype, the chunks in float64)."""
    total = 0.0
    full = limit // 256
    for c in range(full):
        ch = row[c * 256:(c + 1) * 256]
        part = nb.__FT__(0)
        for j in range(256):
            e = __EXP__(ch[j] - m)
            ch[j] = e
            part += e
        total += part
    tail = row[full * 256:limit]
    part = nb.__FT__(0)
    for j in range(tail.shape[0]):
        e = __EXP__(tail[j] - m)
        tail[j] = e
        part += e
    total += part
    row[limit:] = 0
    return total

@nb.njit(nb.void(nb.__FT__[:, :, ::1], nb.__FT__[:, ::1], nb.float64, nb.boolean, nb.int64,
                 nb.int64, _MASK, nb.float64),
         cache=True, nogil=True, fastmath=__FLAGS__)
def softmax(s, inv_sum, scale, causal, row0, diag, mask, fill):
    """In place on a block of scores s [B, R, T] (query rows row0 .. row0+R): scale,
    mask (mask [M1, M2, R, T], B = M1 * M2), causal mask, exp(x - row max); 1/sum to
    inv_sum [B, R]."""
    B, R, T = s.shape
    M2 = mask.shape[1]
    sc = nb.__FT__(scale)
    fl = nb.__FT__(fill)
    lanes = np.empty(16, nb.__FT__)
    one = nb.__FT__(1)
    for p in range(B * R):
        b = p // R
        r = p % R
        limit = T
        if causal:
            limit = min(T, row0 + r + diag + 1)
        row = s[b, r]
        mrow = mask[b // M2, b % M2, r]
        for j in range(limit):
            row[j] = __MASKED__
        m = _row_max(row, limit, one, lanes)
        inv_sum[b, r] = nb.__FT__(1.0 / _exp_sum(row, limit, m))
'''

_MASKED = {"add": ("row[j] * sc + mrow[j]", None), "bool": ("row[j] * sc if mrow[j] else fl",
                                                            "boolean")}

_FLAGS = {"float32": '{"reassoc", "contract"}', "float64": "False"}


def attention_softmax(dtype: str = "float32", mask: str | None = None) -> str:
    """The source of the score-block softmax for ``dtype`` scores (the attention's dtype:
    a float64 graph keeps float64 scores); ``mask``: None, "add" (an additive mask of
    the scores' dtype) or "bool"."""
    if dtype not in _FLAGS or mask not in (None, *_MASKED):
        raise ValueError(f"attention softmax for {dtype!r}, mask {mask!r}")
    if mask is None:
        return fill(_ATTENTION_SOFTMAX, "softmax", FT=dtype, FLAGS=_FLAGS[dtype],
                    EXP=exp_fn(dtype))
    expr, mt = _MASKED[mask]
    return fill(_ATTENTION_SOFTMAX_MASKED, "softmax", FT=dtype, FLAGS=_FLAGS[dtype],
                EXP=exp_fn(dtype), MT=mt or dtype, MASKED=expr)


# GEMMs with one row per batch entry (a decode step: a token's query or attention output
# against per-head weights or the cache, [B, 1, K] @ ...) and few rows against a weight
# (``x @ W.T``, a batched decode step): the weights are read once from memory with every
# thread (one-thread BLAS per call would stream them on one core, and re-pack them on
# every call). These stay ``numba.prange`` loops in Numba's OpenMP pool, the one use of
# it: a decode step makes ~40 such calls of 50-800 us, and waking OpenMP's spinning
# workers costs a few us where a hand-off to the backend's Python helper threads costs
# ~70 (threads.split: decode 75.9 -> 64.3 tokens/s on DeepSeek-V2 mini when these went
# through it). Dot products and row updates the compiler
# vectorises (``reassoc``). ``x @ W.T`` with W stored [out, in] and one row is
# ``rows_shared_t`` with one row.
_ROWS = '''import numpy as np
import numba as nb


@nb.njit(inline="always", fastmath={"reassoc", "contract"})
def _row_times(a, b, out):
    """out = a @ b for one row a [K] and b [K, N]: row updates that vectorise."""
    for n in range(out.shape[0]):
        out[n] = 0
    for k in range(a.shape[0]):
        ak = a[k]
        for n in range(out.shape[0]):
            out[n] += ak * b[k, n]


@nb.njit("void(__FT__[:, ::1], __FT__[:, :, ::1], __FT__[:, ::1])", parallel=True,
         cache=True, nogil=True, fastmath={"reassoc", "contract"})
def rows_batched(a, b, out):
    """out[h] = a[h] @ b[h]: a [B, K], b [B, K, N] C-contiguous; one h per thread task."""
    for h in nb.prange(a.shape[0]):
        _row_times(a[h], b[h], out[h])


@nb.njit("void(__FT__[:, ::1], __FT__[:, ::1], __FT__[:, ::1])", parallel=True,
         cache=True, nogil=True, fastmath={"reassoc", "contract"})
def rows_shared(a, b, out):
    """out = a @ b: a [B, K] few rows, b [K, N] C-contiguous; one row per thread task."""
    for h in nb.prange(a.shape[0]):
        _row_times(a[h], b, out[h])


@nb.njit("void(__FT__[:, ::1], __FT__[:, ::1], __FT__[:, ::1])", parallel=True,
         cache=True, nogil=True, fastmath={"reassoc", "contract"})
def rows_shared_t(a, bt, out):
    """out = a @ bt.T: a [B, K] few rows (one: a GEMV), bt [N, K] C-contiguous (a
    transposed view in the graph: a weight stored [out, in], a cache's keys); the N dot
    products of every row in blocks of 16 over the threads."""
    B, K = a.shape
    N = bt.shape[0]
    for t in nb.prange((N + 15) // 16):
        for n in range(t * 16, min(N, t * 16 + 16)):
            for h in range(B):
                s = nb.__FT__(0)
                for k in range(K):
                    s += a[h, k] * bt[n, k]
                out[h, n] = s


kernel = rows_shared_t
'''


def rows_gemm(dtype: str = "float32") -> str:
    """The source of the one-row-per-batch GEMMs (``rows_batched``, ``rows_shared``,
    ``rows_shared_t``) for ``dtype`` (float32 or float64)."""
    if dtype not in _FLAGS:
        raise ValueError(f"rows_gemm for {dtype!r}")
    return _ROWS.replace("__FT__", dtype)
