"""Hand-written Numba kernels the templates use (loaded through the kernel cache)."""

ATTENTION_SOFTMAX = '''import math
import numpy as np
import numba as nb


@nb.njit("void(float32[:, :, ::1], float64, boolean, int64, int64)", parallel=True,
         cache=True, nogil=True)
def kernel(s, scale, causal, row0, diag):
    """In place on a block of scores s [B, R, T] (query rows row0 .. row0+R): scale, mask
    keys j > row + diag when causal, softmax over keys. Masked entries become 0."""
    B, R, T = s.shape
    for p in nb.prange(B * R):
        b = p // R
        r = p % R
        limit = T
        if causal:
            limit = min(T, row0 + r + diag + 1)
        m = -np.inf
        for j in range(limit):
            m = max(m, np.float64(s[b, r, j]) * scale)
        total = 0.0
        for j in range(limit):
            e = math.exp(np.float64(s[b, r, j]) * scale - m)
            s[b, r, j] = e
            total += e
        inv = np.float32(1.0 / total)
        for j in range(limit):
            s[b, r, j] *= inv
        for j in range(limit, T):
            s[b, r, j] = 0
'''
