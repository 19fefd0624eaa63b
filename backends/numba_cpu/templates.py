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
