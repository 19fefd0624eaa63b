"""Hand-written Numba kernels the templates use (loaded through the kernel cache)."""

_DOC = '''"""In place on a block of scores s [B, R, T] (query rows row0 .. row0+R): scale, mask
    keys j > row + diag when causal, exp(x - row max). Masked entries become 0. The row
    normalisation 1/sum goes to inv_sum [B, R]: it is applied to the [R, dv] output of
    P @ V instead of to the [R, T] scores (one pass over the scores less). The row sum
    is accumulated in float64 so long rows keep their precision."""'''

# float64 scores: libm's exp, one element at a time.
_ATTENTION_SOFTMAX_F64 = '''import math
import numpy as np
import numba as nb


@nb.njit("void(float64[:, :, ::1], float64[:, ::1], float64, boolean, int64, int64)",
         parallel=True, cache=True, nogil=True)
def kernel(s, inv_sum, scale, causal, row0, diag):
    DOC
    B, R, T = s.shape
    for p in nb.prange(B * R):
        b = p // R
        r = p % R
        limit = T
        if causal:
            limit = min(T, row0 + r + diag + 1)
        m = -np.inf
        for j in range(limit):
            m = max(m, s[b, r, j] * scale)
        total = 0.0
        for j in range(limit):
            e = math.exp(s[b, r, j] * scale - m)
            s[b, r, j] = e
            total += e
        inv_sum[b, r] = 1.0 / total
        for j in range(limit, T):
            s[b, r, j] = 0
'''.replace("DOC", _DOC)

# float32 scores: an exp the compiler vectorises (8 lanes with AVX2), which libm's expf
# called per element is not. exp(x) = 2^n * 2^f with t = x log2(e), n = round(t), f = t - n
# in [-1/2, 1/2]: 2^f = e^(f ln 2) by its degree-7 Taylor polynomial (truncation < 5e-9,
# below float32 rounding), 2^n by writing n + 127 into a float32's exponent bits (an int32
# row viewed as float32, so no scalar bit cast is needed). x <= 0 here (the row max is
# subtracted); t below -127 is clamped there, where the exponent bits are all zero and
# the result is exactly 0 (masked keys, -inf, and values under 2^-126.5, which float32
# flushes anyway). A NaN score stays NaN (and so does its row's sum). ``reassoc`` lets
# the row max and sum vectorise; no flag assumes away NaN or infinities.
_ATTENTION_SOFTMAX_F32 = '''import numpy as np
import numba as nb


@nb.njit("void(float32[:, :, ::1], float32[:, ::1], float64, boolean, int64, int64)",
         parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
def kernel(s, inv_sum, scale, causal, row0, diag):
    DOC
    B, R, T = s.shape
    sc = np.float32(scale)
    log2e = np.float32(1.4426950408889634)
    ln2 = np.float32(0.6931471805599453)
    lowest = np.float32(-127.0)
    half = np.float32(0.5)
    one = np.float32(1.0)
    for p in nb.prange(B * R):
        b = p // R
        r = p % R
        limit = T
        if causal:
            limit = min(T, row0 + r + diag + 1)
        row = s[b, r]
        m = np.float32(-np.inf)
        for j in range(limit):
            v = row[j] * sc
            m = v if v > m else m
        bits = np.empty(limit, np.int32)
        for j in range(limit):
            x = row[j] * sc - m
            t = x * log2e
            t = t if t > lowest else lowest
            n = np.floor(t + half)
            f = (t - n) * ln2
            q = one + f * (one + f * (np.float32(1 / 2) + f * (np.float32(1 / 6) + f * (
                np.float32(1 / 24) + f * (np.float32(1 / 120) + f * (
                    np.float32(1 / 720) + f * np.float32(1 / 5040)))))))
            row[j] = x if x != x else q
            bits[j] = (np.int32(n) + np.int32(127)) << 23
        two_n = bits.view(np.float32)
        total = 0.0
        for j in range(limit):
            e = row[j] * two_n[j]
            row[j] = e
            total += e
        inv_sum[b, r] = np.float32(1.0 / total)
        for j in range(limit, T):
            row[j] = 0
'''.replace("DOC", _DOC)


def attention_softmax(dtype: str = "float32") -> str:
    """The source of the score-block softmax for ``dtype`` scores (the attention's dtype:
    a float64 graph keeps float64 scores)."""
    try:
        return {"float32": _ATTENTION_SOFTMAX_F32, "float64": _ATTENTION_SOFTMAX_F64}[dtype]
    except KeyError:
        raise ValueError(f"attention softmax for {dtype!r}") from None


ATTENTION_SOFTMAX = attention_softmax("float32")
