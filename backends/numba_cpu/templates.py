"""Hand-written Numba kernels the templates use (loaded through the kernel cache)."""
from .vmath import VMATH

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

# float32 scores: vmath's _exp32, which the compiler vectorises (libm's expf per element
# it does not: 2.67 -> 0.72 ms on a 16 x 128 x 512 causal block). ``reassoc`` lets the row
# max and sum vectorise; no flag assumes away NaN or infinities (a NaN score makes its
# row's sum NaN; masked keys come out exactly 0).
_ATTENTION_SOFTMAX_F32 = VMATH + '''

@nb.njit("void(float32[:, :, ::1], float32[:, ::1], float64, boolean, int64, int64)",
         parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
def kernel(s, inv_sum, scale, causal, row0, diag):
    DOC
    B, R, T = s.shape
    sc = np.float32(scale)
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
        total = 0.0
        for j in range(limit):
            e = _exp32(row[j] * sc - m)
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
