"""Hand-written Numba kernels the templates use (loaded through the kernel cache)."""
from .vmath import VMATH, exp_fn

# The score-block softmax, for __FT__ scores. float32: vmath's _exp32, which the compiler
# vectorises (libm's expf per element it does not: 2.67 -> 0.7-0.9 ms on a 16 x 128 x 512
# causal block), with ``reassoc`` so the row max and sum vectorise too; no flag assumes
# away NaN or infinities (a NaN score makes its row's sum NaN; masked keys come out
# exactly 0). float64: libm's exp and no fast-math flags (the oracle's precision).
_ATTENTION_SOFTMAX = VMATH + '''

@nb.njit("void(__FT__[:, :, ::1], __FT__[:, ::1], float64, boolean, int64, int64)",
         parallel=True, cache=True, nogil=True, fastmath=__FLAGS__)
def kernel(s, inv_sum, scale, causal, row0, diag):
    """In place on a block of scores s [B, R, T] (query rows row0 .. row0+R): scale, mask
    keys j > row + diag when causal, exp(x - row max). Masked entries become 0. The row
    normalisation 1/sum goes to inv_sum [B, R]: it is applied to the [R, dv] output of
    P @ V instead of to the [R, T] scores (one pass over the scores less). The row sum
    is accumulated in float64 so long rows keep their precision."""
    B, R, T = s.shape
    sc = nb.__FT__(scale)
    for p in nb.prange(B * R):
        b = p // R
        r = p % R
        limit = T
        if causal:
            limit = min(T, row0 + r + diag + 1)
        row = s[b, r]
        m = nb.__FT__(-np.inf)
        for j in range(limit):
            v = row[j] * sc
            m = v if v > m else m
        total = 0.0
        for j in range(limit):
            e = __EXP__(row[j] * sc - m)
            row[j] = e
            total += e
        inv_sum[b, r] = nb.__FT__(1.0 / total)
        for j in range(limit, T):
            row[j] = 0
'''

_FLAGS = {"float32": '{"reassoc", "contract"}', "float64": "False"}


def attention_softmax(dtype: str = "float32") -> str:
    """The source of the score-block softmax for ``dtype`` scores (the attention's dtype:
    a float64 graph keeps float64 scores)."""
    if dtype not in _FLAGS:
        raise ValueError(f"attention softmax for {dtype!r}")
    return (_ATTENTION_SOFTMAX.replace("__FT__", dtype).replace("__FLAGS__", _FLAGS[dtype])
            .replace("__EXP__", exp_fn(dtype)))
