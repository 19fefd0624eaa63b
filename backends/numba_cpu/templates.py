"""Hand-written Numba kernels the templates use (loaded through the kernel cache)."""

_ATTENTION_SOFTMAX = '''import math
import numpy as np
import numba as nb


@nb.njit("void(float32[:, :, ::1], float32[:, ::1], float64, boolean, int64, int64)",
         parallel=True, cache=True, nogil=True)
def kernel(s, inv_sum, scale, causal, row0, diag):
    """In place on a block of scores s [B, R, T] (query rows row0 .. row0+R): scale, mask
    keys j > row + diag when causal, exp(x - row max). Masked entries become 0. The row
    normalisation 1/sum goes to inv_sum [B, R]: it is applied to the [R, dv] output of
    P @ V instead of to the [R, T] scores (one pass over the scores less)."""
    B, R, T = s.shape
    sc = np.float32(scale)
    for p in nb.prange(B * R):
        b = p // R
        r = p % R
        limit = T
        if causal:
            limit = min(T, row0 + r + diag + 1)
        # max and exp in the scores' dtype (expf for float32 scores: the float64 exp
        # costs 3x there), the row sum in float64 so long rows keep their precision
        m = np.float32(-np.inf)
        for j in range(limit):
            m = max(m, s[b, r, j] * sc)
        total = 0.0
        for j in range(limit):
            e = math.exp(s[b, r, j] * sc - m)
            s[b, r, j] = e
            total += e
        inv_sum[b, r] = np.float32(1.0 / total)
        for j in range(limit, T):
            s[b, r, j] = 0
'''


def attention_softmax(dtype: str = "float32") -> str:
    """The source of the score-block softmax for ``dtype`` scores (the attention's dtype:
    a float64 graph keeps float64 scores)."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"attention softmax for {dtype!r}")
    return _ATTENTION_SOFTMAX.replace("float32", dtype)


ATTENTION_SOFTMAX = attention_softmax("float32")
