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


# The score-block softmax. Its block is key-major: s [B, T, R], score s[b, j, r] of key j
# and query row r, written by the GEMM k @ q^T (M = keys, N = query rows, K = head dim),
# which OpenBLAS runs at 93-96 GFLOP/s on one core where q @ k^T (M = 128 query rows,
# N = keys) ran at 60-66 ([128, 64] x [64, 2048]; P^T read back as a transposed operand
# of P @ V runs as fast as P did: 92 GFLOP/s). The softmax is then over each column of
# the block, and every pass goes along the query rows of one key: a lane-wise max, exp
# and sum that vectorise with no horizontal reduction (R = 128: 168 us against the
# row-major kernel's 174 us on a 2048-key block; R = 256: 250 against 360). A decode
# step's one query row is not a block of its own: the runtime puts its heads side by side
# as the columns (runtime.one_row), so the same loops run along the heads (a row-wise
# path beside them cost ~1 s more of Numba compile per module).
# float32: vmath's _exp32, which the compiler vectorises (libm's expf per element it
# does not), with ``reassoc`` so the max and sums vectorise too; no flag assumes away
# NaN or infinities (a NaN score makes its row's sum NaN; masked keys come out exactly 0).
# float64: libm's exp and no fast-math flags (the oracle's precision). The sum of each
# query row is accumulated per chunk of 256 keys in the scores' dtype (a float32 sum
# vectorises; a float64 one, converting every element, made the pass 2x slower) and the
# chunks in float64, so long rows keep their precision. Masked entries become 0; the row
# normalisation 1/sum goes to inv_sum [B, R] and is applied to the [R, dv] output of
# P @ V instead of the [T, R] scores (one pass over the scores less). One serial function
# (``softmax``, the module's ``kernel``) over the query rows lo..hi of every block
# entry: the runtime splits a block of at least SOFTMAX_PARALLEL_MIN scores by entries
# or by query rows over its threads (runtime.split_softmax; a smaller one runs on the
# calling thread: handing a part over costs more than the work). A prange copy beside it
# cost 1.3 s more of Numba compile per module (2.1 vs 0.8 s of CPU).
SOFTMAX_PARALLEL_MIN = 1 << 15

_SOFTMAX_COMMON = '''

@nb.njit(inline="always")
def _first_row(j, lo, causal, row0, diag):
    """The first of the query rows lo.. (block rows; row r is query row row0 + r) that
    sees key j: all of them, or under the causal mask those with row0 + r + diag >= j."""
    if causal:
        return max(lo, j - row0 - diag)
    return lo


@nb.njit(inline="always", fastmath=__FLAGS__)
def _columns_exp_sum(sb, m, part, total, sc, causal, row0, diag, lo, hi):
    """One block entry's key-major scores sb [T, R], query rows lo..hi, their max over
    the keys each sees in m [R]: sb = exp(sb * sc - m) where row r sees key j, 0 where
    it does not; each row's sum into total [R] (float64), per chunk of 256 keys in
    part [R] (the scores' dtype)."""
    T = sb.shape[0]
    total[lo:hi] = 0
    for c0 in range(0, T, 256):
        part[lo:hi] = 0
        for j in range(c0, min(T, c0 + 256)):
            a = _first_row(j, lo, causal, row0, diag)
            row = sb[j]
            row[lo:a] = 0
            if a >= hi:
                continue
            rp, mp, pp = row[a:hi], m[a:hi], part[a:hi]
            for i in range(hi - a):
                e = __EXP__(rp[i] * sc - mp[i])
                rp[i] = e
                pp[i] += e
        for r in range(lo, hi):
            total[r] += part[r]
'''

# The body both softmax modules share; attention_softmax fills in the mask's parts
# (__SIG__ .. __MAX_PASS__), then the dtype's (__FT__, __EXP__, ...).
_SOFTMAX_BODY = '''

@nb.njit(__SIG__,
         cache=True, nogil=True, fastmath=__FLAGS__)
def softmax(s, inv_sum, scale, causal, row0, diag, __MASK_ARGS__lo, hi):
    """In place on the key-major block of scores s [B, T, R] (query rows row0 .. row0+R),
    query rows lo..hi of every entry: scale, __DOC__the causal mask
    (keys j > row + diag), exp(x - the row's max); 1/sum to inv_sum [B, R]."""
    B, T, R = s.shape
    sc = nb.__FT__(scale)
    m = np.empty(R, nb.__FT__)
    part = np.empty(R, nb.__FT__)
    total = np.empty(R, np.float64)__SETUP__
    for b in range(B):__ENTRY__
        sb = s[b]
        m[lo:hi] = -np.inf
        for j in range(T):
            a = _first_row(j, lo, causal, row0, diag)
            if a >= hi:
                continue
            rp, mp = sb[j, a:hi], m[a:hi]__MAX_PASS__
        _columns_exp_sum(sb, m, part, total, __EXP_SCALE__, causal, row0, diag, lo, hi)
        for r in range(lo, hi):
            inv_sum[b, r] = nb.__FT__(1.0 / total[r])
'''

_UNMASKED_PARTS = {
    "SIG": '"void(__FT__[:, :, ::1], __FT__[:, ::1], float64, boolean, int64, int64, int64, "'
           '\n         "int64)"',
    "MASK_ARGS": "", "DOC": "", "SETUP": "", "ENTRY": "", "EXP_SCALE": "sc",
    "MAX_PASS": '''
            for i in range(hi - a):
                v = rp[i] * sc
                mp[i] = v if v > mp[i] else mp[i]'''}

# The same softmax for a masked attention (a module of its own, loaded only by programs
# whose attention has a mask). Its mask block is key-major and C-contiguous, the
# distinct blocks only: mask [U1, U2, T, RR], score entry b (of B = M1 * M2, entry b is
# (b // M2, b % M2)) reading mask[b // M2 if U1 > 1 else 0, b % M2 if U2 > 1 else 0], and
# RR = 1 for a mask that broadcasts over the query rows (a padding mask [B, 1, 1, T] over
# B x H heads: one value per key), else R. The runtime makes it (runtime._key_major: a
# causal mask tensor's block is transposed once, by ``key_major`` below, for every head
# it applies to). Read through a strided view instead (Numba's "A" layout), the mask
# pass did not vectorise: 1.2 ns a score against 0.54 without a mask. An additive mask
# is added to the scaled scores; a bool mask keeps a score where it is True and puts
# ``fill`` (-inf, or the finite value a model fills with) where it is False. A row
# masked whole comes out NaN, as the reference's softmax gives (0/0); with a finite
# fill, uniform.
_MASKED_PARTS = {
    "SIG": "nb.void(nb.__FT__[:, :, ::1], nb.__FT__[:, ::1], nb.float64, nb.boolean, "
           "nb.int64,\n                 nb.int64, _MASK, nb.int64, nb.float64, nb.int64, "
           "nb.int64)",
    "MASK_ARGS": "mask, M2, fill, ", "DOC": "mask (above), ", "EXP_SCALE": "one",
    "SETUP": '''
    U1, U2, _, RR = mask.shape
    fl = nb.__FT__(fill)
    one = nb.__FT__(1)''',
    "ENTRY": '''
        mb = mask[b // M2 if U1 > 1 else 0, b % M2 if U2 > 1 else 0]''',
    "MAX_PASS": '''
            if RR == 1:               # one mask value for every query row
                mcol = mb[j]
                for i in range(hi - a):
                    v = __MASKED_ONE__
                    rp[i] = v
                    mp[i] = v if v > mp[i] else mp[i]
            else:
                mcol = mb[j, a:hi]
                for i in range(hi - a):
                    v = __MASKED_COL__
                    rp[i] = v
                    mp[i] = v if v > mp[i] else mp[i]'''}

# The masked module's mask type and its key-major transpose (runtime._key_major).
_MASK_TYPES = '''

_MASK = nb.types.Array(nb.__MT__, 4, "C", readonly=True)
'''

_KEY_MAJOR = '''

@nb.njit(nb.void(nb.types.Array(nb.__MT__, 4, "A", readonly=True),
                 nb.types.Array(nb.__MT__, 4, "C")), cache=True, nogil=True)
def key_major(src, dst):
    """dst [U1, U2, T, R] = src [U1, U2, R, T] (any strides) transposed, in tiles of
    16 query rows x 16 keys."""
    U1, U2, R, T = src.shape
    for a in range(U1):
        for b in range(U2):
            sm, dm = src[a, b], dst[a, b]
            for r0 in range(0, R, 16):
                r1 = min(R, r0 + 16)
                for j0 in range(0, T, 16):
                    for j in range(j0, min(T, j0 + 16)):
                        dj = dm[j]
                        for r in range(r0, r1):
                            dj[r] = sm[r, j]
'''

# (a key's score i: its own mask value, the key's one value) -> masked
_MASKED = {"add": ("rp[i] * sc + mcol[i]", "rp[i] * sc + mcol[0]", None),
           "bool": ("rp[i] * sc if mcol[i] else fl", "rp[i] * sc if mcol[0] else fl",
                    "boolean")}

_FLAGS = {"float32": '{"reassoc", "contract"}', "float64": "False"}


def _softmax_body(parts: dict) -> str:
    out = _SOFTMAX_BODY
    for k, v in parts.items():
        out = out.replace(f"__{k}__", v)
    return out


def attention_softmax(dtype: str = "float32", mask: str | None = None) -> str:
    """The source of the key-major score-block softmax for ``dtype`` scores (the
    attention's dtype: a float64 graph keeps float64 scores); ``mask``: None, "add" (an
    additive mask of the scores' dtype) or "bool"."""
    if dtype not in _FLAGS or mask not in (None, *_MASKED):
        raise ValueError(f"attention softmax for {dtype!r}, mask {mask!r}")
    if mask is None:
        return fill(VMATH + _SOFTMAX_COMMON + _softmax_body(_UNMASKED_PARTS), "softmax",
                    FT=dtype, FLAGS=_FLAGS[dtype], EXP=exp_fn(dtype))
    col, one, mt = _MASKED[mask]
    src = VMATH + _SOFTMAX_COMMON + _MASK_TYPES + _softmax_body(_MASKED_PARTS) + _KEY_MAJOR
    return fill(src, "softmax", FT=dtype, FLAGS=_FLAGS[dtype], EXP=exp_fn(dtype),
                MT=mt or dtype, MASKED_COL=col, MASKED_ONE=one)


# Dot products of rows a [B, K] with the rows of bt [N, K] (a weight stored [out, in], read
# as ``x @ W.T``), weight row by weight row (each read once from memory, the rows of a
# from L1): rows_gemm's and tiles_gemm's modules include it.
ROW_DOTS = '''
@nb.njit(inline="always", fastmath={"reassoc", "contract"})
def _dots(a, bt, out, h0, h1, n0, n1):
    """out[h, n] = a[h] . bt[n] for rows h0..h1 and weight rows n0..n1, one at a time."""
    for n in range(n0, n1):
        for h in range(h0, h1):
            s = nb.__FT__(0)
            for k in range(a.shape[1]):
                s += a[h, k] * bt[n, k]
            out[h, n] = s
'''


# The dot-product tiles of more than one row against the rows of a weight (tiles_gemm):
# per weight row a plain dot product per row is bound by the loads (two per multiply-add);
# four rows against four weight rows load eight values for sixteen multiply-adds, the
# sums in registers. (Their own module: it takes ~5 s to compile, which a model's one-row
# decode step does not need.)
ROW_TILES = '''
@nb.njit(inline="always", fastmath={"reassoc", "contract"})
def _tile4x4(a, bt, out, h, n0, n1):
    """Rows h..h+3 against weight rows n0..n1 four at a time: sixteen sums in
    registers, eight loads for sixteen multiply-adds."""
    n = n0
    while n + 4 <= n1:
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = nb.__FT__(0)
        s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = nb.__FT__(0)
        for k in range(a.shape[1]):
            w0 = bt[n, k]
            w1 = bt[n + 1, k]
            w2 = bt[n + 2, k]
            w3 = bt[n + 3, k]
            x0 = a[h, k]
            x1 = a[h + 1, k]
            x2 = a[h + 2, k]
            x3 = a[h + 3, k]
            s00 += x0 * w0
            s01 += x1 * w0
            s02 += x2 * w0
            s03 += x3 * w0
            s10 += x0 * w1
            s11 += x1 * w1
            s12 += x2 * w1
            s13 += x3 * w1
            s20 += x0 * w2
            s21 += x1 * w2
            s22 += x2 * w2
            s23 += x3 * w2
            s30 += x0 * w3
            s31 += x1 * w3
            s32 += x2 * w3
            s33 += x3 * w3
        out[h, n] = s00
        out[h + 1, n] = s01
        out[h + 2, n] = s02
        out[h + 3, n] = s03
        out[h, n + 1] = s10
        out[h + 1, n + 1] = s11
        out[h + 2, n + 1] = s12
        out[h + 3, n + 1] = s13
        out[h, n + 2] = s20
        out[h + 1, n + 2] = s21
        out[h + 2, n + 2] = s22
        out[h + 3, n + 2] = s23
        out[h, n + 3] = s30
        out[h + 1, n + 3] = s31
        out[h + 2, n + 3] = s32
        out[h + 3, n + 3] = s33
        n += 4
    _dots(a, bt, out, h, h + 4, n, n1)


@nb.njit(inline="always", fastmath={"reassoc", "contract"})
def _tile2x4(a, bt, out, h, n0, n1):
    """Rows h, h+1 against weight rows n0..n1 four at a time."""
    n = n0
    while n + 4 <= n1:
        s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = nb.__FT__(0)
        for k in range(a.shape[1]):
            w0 = bt[n, k]
            w1 = bt[n + 1, k]
            w2 = bt[n + 2, k]
            w3 = bt[n + 3, k]
            x0 = a[h, k]
            x1 = a[h + 1, k]
            s00 += x0 * w0
            s01 += x1 * w0
            s10 += x0 * w1
            s11 += x1 * w1
            s20 += x0 * w2
            s21 += x1 * w2
            s30 += x0 * w3
            s31 += x1 * w3
        out[h, n] = s00
        out[h + 1, n] = s01
        out[h, n + 1] = s10
        out[h + 1, n + 1] = s11
        out[h, n + 2] = s20
        out[h + 1, n + 2] = s21
        out[h, n + 3] = s30
        out[h + 1, n + 3] = s31
        n += 4
    _dots(a, bt, out, h, h + 2, n, n1)


@nb.njit(nogil=True, fastmath={"reassoc", "contract"})
def tiles(a, bt, out, h0, h1, n0, n1):
    """out[h0:h1, n0:n1] = a[h0:h1] @ bt[n0:n1].T: rows four at a time against four
    weight rows, then two, then one (bt [N, K] C-contiguous)."""
    h = h0
    while h + 4 <= h1:
        _tile4x4(a, bt, out, h, n0, n1)
        h += 4
    if h + 2 <= h1:
        _tile2x4(a, bt, out, h, n0, n1)
        h += 2
    _dots(a, bt, out, h, h1, n0, n1)
'''


# GEMMs with one row per batch entry (a decode step: a token's query or attention output
# against per-head weights or the cache, [B, 1, K] @ ...), batched GEMMs of few rows (a
# decode step's per-head products) and few rows against a weight (``x @ W.T``, a batched
# decode step: tiles_gemm): the weights are read once from memory with every thread
# (one-thread BLAS per call would stream them on one core, and re-pack them on every
# call). These stay ``numba.prange`` loops in Numba's OpenMP pool, the one use of it: a
# decode step makes ~40 such calls of 50-800 us, and waking OpenMP's spinning workers
# costs a few us where a hand-off to the backend's Python helper threads costs ~70
# (threads.split: decode 75.9 -> 64.3 tokens/s on DeepSeek-V2 mini when these went
# through it). Dot products and row updates the compiler vectorises (``reassoc``).
# ``x @ W.T`` with W stored [out, in] and one row is ``rows_shared_t`` with one row.
_ROWS = '''import numpy as np
import numba as nb

__DOTS__

@nb.njit(inline="always", fastmath={"reassoc", "contract"})
def _row_times(a, b, out):
    """out = a @ b for one row a [K] and b [K, N]: row updates that vectorise."""
    for n in range(out.shape[0]):
        out[n] = 0
    for k in range(a.shape[0]):
        ak = a[k]
        for n in range(out.shape[0]):
            out[n] += ak * b[k, n]


@nb.njit(inline="always", fastmath={"reassoc", "contract"})
def _rows_times(a, b, out):
    """out = a @ b for few rows a [M, K] (any strides) and b [K, N]: row updates that
    vectorise, each row of b read once for the M rows (from L1, as out's rows are)."""
    for m in range(out.shape[0]):
        for n in range(out.shape[1]):
            out[m, n] = 0
    for k in range(a.shape[1]):
        for m in range(out.shape[0]):
            amk = a[m, k]
            for n in range(out.shape[1]):
                out[m, n] += amk * b[k, n]


@nb.njit("void(__FT__[:, :, :], __FT__[:, :, ::1], __FT__[:, :, ::1])", parallel=True,
         cache=True, nogil=True, fastmath={"reassoc", "contract"})
def rows_batched(a, b, out):
    """out[h] = a[h] @ b[h]: a [B, M, K] few rows (a view: any strides), b [B, K, N] and
    out C-contiguous; one h per thread task. Per-head GEMMs of a decode step (the query
    through W_UK, the latent output through W_UV, one row or a batch's few) are ~0.1-0.5
    MFLOP each: a BLAS call per head costs more than its work."""
    for h in nb.prange(a.shape[0]):
        _rows_times(a[h], b[h], out[h])


@nb.njit("void(__FT__[:, ::1], __FT__[:, ::1], __FT__[:, ::1])", parallel=True,
         cache=True, nogil=True, fastmath={"reassoc", "contract"})
def rows_shared(a, b, out):
    """out = a @ b: a [B, K] few rows, b [K, N] C-contiguous; one row per thread task."""
    for h in nb.prange(a.shape[0]):
        _row_times(a[h], b, out[h])


@nb.njit("void(__FT__[:, ::1], __FT__[:, ::1], __FT__[:, ::1])", parallel=True,
         cache=True, nogil=True, fastmath={"reassoc", "contract"})
def rows_shared_t(a, bt, out):
    """out = a @ bt.T: a [B, K] rows (one: a GEMV; several: one row each of a batch of
    heads), bt [N, K] C-contiguous (a transposed view in the graph: a weight stored
    [out, in], a cache's keys); blocks of 16 weight rows over the threads."""
    N = bt.shape[0]
    for t in nb.prange((N + 15) // 16):
        _dots(a, bt, out, 0, a.shape[0], t * 16, min(N, t * 16 + 16))


kernel = rows_shared_t
'''


# The tiled few-row GEMMs (ROW_TILES), loaded at the first GEMM that takes them.
_TILED = '''import numpy as np
import numba as nb

__DOTS__
__TILES__

@nb.njit("void(__FT__[:, ::1], __FT__[:, ::1], __FT__[:, ::1])", parallel=True,
         cache=True, nogil=True, fastmath={"reassoc", "contract"})
def tiled_t(a, bt, out):
    """out = a @ bt.T: a [B, K] few rows (2 to FEW_ROWS: a batched decode step), bt [N,
    K] C-contiguous (a weight stored [out, in]); blocks of 16 weight rows over the
    threads (a batched decode step's [8, 1024] x [1024, 5632]: 1.54 ms as rows_shared_t's
    dot products, 0.57 tiled)."""
    N = bt.shape[0]
    for t in nb.prange((N + 15) // 16):
        tiles(a, bt, out, 0, a.shape[0], t * 16, min(N, t * 16 + 16))


@nb.njit("void(__FT__[:, :, ::1], __FT__[:, :, ::1], __FT__[:, :, ::1])", parallel=True,
         cache=True, nogil=True, fastmath={"reassoc", "contract"})
def tiled_batched_t(a, bt, out):
    """out[h] = a[h] @ bt[h].T: a [B, M, K] few rows, bt [B, N, K] (a transposed view in
    the graph: each sequence's cached keys), out: C-contiguous; one h per thread task."""
    for h in nb.prange(a.shape[0]):
        tiles(a[h], bt[h], out[h], 0, a.shape[1], 0, bt.shape[1])


kernel = tiled_t
'''


def rows_gemm(dtype: str = "float32") -> str:
    """The source of the one-row and batched few-row GEMMs (``rows_batched``,
    ``rows_shared``, ``rows_shared_t``) for ``dtype`` (float32 or float64)."""
    if dtype not in _FLAGS:
        raise ValueError(f"rows_gemm for {dtype!r}")
    return _ROWS.replace("__DOTS__", ROW_DOTS).replace("__FT__", dtype)


def tiles_gemm(dtype: str = "float32") -> str:
    """The source of the tiled few-row GEMMs against a transposed operand (``tiled_t``,
    ``tiled_batched_t``) for ``dtype`` (float32 or float64)."""
    if dtype not in _FLAGS:
        raise ValueError(f"tiles_gemm for {dtype!r}")
    return (_TILED.replace("__DOTS__", ROW_DOTS).replace("__TILES__", ROW_TILES)
            .replace("__FT__", dtype))
