"""Hand-written CUDA templates: the flash-attention kernel.

``flash_attention(dtype, d, dv)`` renders a kernel specialised for the head dims: one
thread block of 128 threads (4 warps) per tile of ``BQ`` query rows of one batch entry.
The tile's queries (pre-scaled) sit in shared memory; the keys go by in tiles of 32, one
key per lane, first K (scores) then V (in the same shared buffer). Each warp owns
``BQ / 4`` query rows: it computes their 32 scores, updates the running row max ``m`` and
sum ``l`` with warp shuffles (the online softmax), rescales its output accumulators,
and adds ``P @ V``. Tiles above the causal diagonal are never visited; the S x S score
matrix never exists. The output is divided by ``l`` once at the end.

Operands are [B, rows, d] views with a two-level batch index (entry b is (b1, b2) of
[B / N2, N2], each operand with its own two batch strides) and any row stride (the last
dim contiguous), so head-split transposes and the head merge after the attention
([B, H, S, d] stored into [B, S, H * d]) need no copy. k and v may have fewer heads than
q (grouped-query attention): they read batch entry (b1 / d1, b2 / d2), so each kv head
is read by its group of query heads without a copy. The optional mask (``mask_mode`` 1:
additive, of the scores' dtype; 2: bool, where False puts ``fill``) is read per
(row, key) through strides, 0 where it broadcasts (a padding mask [B, 1, 1, T]), and
applied to the scaled score before the causal mask. Accumulation is in float for float32 inputs (and
would be for float16/bfloat16, the ``ACC`` table), in double for float64.
"""
from __future__ import annotations

from graphc.errors import BackendError

from .render import CTYPES

THREADS = 128          # 4 warps
KEYS = 32              # keys per tile: one per lane
SHARED_LIMIT = 48 * 1024
ACC = {"float32": "float", "float64": "double"}

_FLASH = r"""
// flash attention: D=__D__, DV=__DV__, BQ=__BQ__ query rows per block, __T__
extern "C" __global__ void __NAME__(
    const __T__* q, const __T__* k, const __T__* v, __T__* o,
    const __T__* madd, const bool* mbool, long long N2,
    long long q_s1, long long q_s2, long long q_sr,
    long long k_s1, long long k_d1, long long k_s2, long long k_d2, long long k_sr,
    long long v_s1, long long v_d1, long long v_s2, long long v_d2, long long v_sr,
    long long o_s1, long long o_s2, long long o_sr,
    long long m_s1, long long m_d1, long long m_s2, long long m_d2, long long m_sr,
    long long m_sc, long long B, long long S, long long T, double scale, int causal,
    long long diag, int mask_mode, double fill, double softcap) {
  const int D = __D__, DV = __DV__, BQ = __BQ__, RPW = __BQ__ / 4, NC = (__DV__ + 31) / 32;
  const int KVW = __KVW__;
  __shared__ __A__ Qs[__BQ__ * __D__];
  __shared__ __A__ KV[32 * __KVW__];
  __shared__ __A__ Ps[__BQ__ * 32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const __A__ NEG_INF = -__INF__;
  const long long n_tiles = (S + BQ - 1) / BQ;
  for (long long blk = blockIdx.x; blk < B * n_tiles; blk += gridDim.x) {
    const long long b = blk / n_tiles, r0 = (blk - b * n_tiles) * BQ;
    // batch entry b is (b1, b2) of [B / N2, N2]; an operand with fewer heads (k, v:
    // grouped-query attention) or a broadcast mask reads entry (b1 / d1, b2 / d2)
    const long long b1 = b / N2, b2 = b - b1 * N2;
    const long long q_b = b1 * q_s1 + b2 * q_s2, o_b = b1 * o_s1 + b2 * o_s2;
    const long long k_b = (b1 / k_d1) * k_s1 + (b2 / k_d2) * k_s2;
    const long long v_b = (b1 / v_d1) * v_s1 + (b2 / v_d2) * v_s2;
    const long long m_b = (b1 / m_d1) * m_s1 + (b2 / m_d2) * m_s2;
    __syncthreads();                         // Qs, KV and Ps are reused from the last tile
    for (int e = tid; e < BQ * D; e += THREADS_) {
      const int r = e / D, d = e - r * D;
      Qs[e] = r0 + r < S ? (__A__)q[q_b + (r0 + r) * q_sr + d] * (__A__)scale : (__A__)0;
    }
    __A__ m[RPW], l[RPW], acc[RPW][NC];
    for (int i = 0; i < RPW; ++i) {
      m[i] = NEG_INF;
      l[i] = 0;
      for (int c = 0; c < NC; ++c) acc[i][c] = 0;
    }
    // keys the last row of the tile may see (all of them unless causal)
    long long k_end = T;
    if (causal) {
      k_end = r0 + BQ + diag;
      if (k_end > T) k_end = T;
      if (k_end < 0) k_end = 0;
    }
    for (long long k0 = 0; k0 < k_end; k0 += 32) {
      __syncthreads();
      for (int e = tid; e < 32 * D; e += THREADS_) {
        const int j = e / D, d = e - j * D;
        KV[j * KVW + d] = k0 + j < T ? (__A__)k[k_b + (k0 + j) * k_sr + d] : (__A__)0;
      }
      __syncthreads();
      const long long key = k0 + lane;
      for (int i = 0; i < RPW; ++i) {
        const int r = warp * RPW + i;
        __A__ s = 0;
        for (int d = 0; d < D; ++d) s += Qs[r * D + d] * KV[lane * KVW + d];
        if (softcap > 0) s = (__A__)softcap * tanh(s / (__A__)softcap);   // Gemma 2's cap
        const long long row = r0 + r;
        bool masked = key >= T || (causal && key > row + diag);
        if (!masked && row < S && mask_mode) {  // the mask, on the scaled score
          const long long at = m_b + row * m_sr + key * m_sc;
          if (mask_mode == 1) s += (__A__)madd[at];
          else if (!mbool[at]) s = (__A__)fill;
        }
        masked = masked || s == NEG_INF;         // (a -inf mask: p = 0, not NaN)
        if (masked) s = NEG_INF;
        __A__ mx = s;
        for (int off = 16; off > 0; off >>= 1) {
          const __A__ other = __shfl_xor_sync(0xffffffffu, mx, off);
          mx = other > mx ? other : mx;
        }
        const __A__ m_new = mx > m[i] ? mx : m[i];
        // every key so far masked: m_new is -inf; p and the old terms are 0
        const __A__ p = masked ? (__A__)0 : __EXP__(s - m_new);
        const __A__ alpha = m[i] == NEG_INF ? (__A__)0 : __EXP__(m[i] - m_new);
        __A__ psum = p;
        for (int off = 16; off > 0; off >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, off);
        l[i] = l[i] * alpha + psum;
        m[i] = m_new;
        for (int c = 0; c < NC; ++c) acc[i][c] *= alpha;
        Ps[r * 32 + lane] = p;
      }
      __syncthreads();
      for (int e = tid; e < 32 * DV; e += THREADS_) {
        const int j = e / DV, d = e - j * DV;
        KV[j * KVW + d] = k0 + j < T ? (__A__)v[v_b + (k0 + j) * v_sr + d] : (__A__)0;
      }
      __syncthreads();
      for (int i = 0; i < RPW; ++i) {
        const int r = warp * RPW + i;
        for (int c = 0; c < NC; ++c) {
          const int col = lane + 32 * c;
          if (col < DV) {
            __A__ t = 0;
            for (int j = 0; j < 32; ++j) t += Ps[r * 32 + j] * KV[j * KVW + col];
            acc[i][c] += t;
          }
        }
      }
    }
    for (int i = 0; i < RPW; ++i) {
      const long long row = r0 + warp * RPW + i;
      if (row < S) {
        const __A__ inv = (__A__)1 / l[i];
        for (int c = 0; c < NC; ++c) {
          const int col = lane + 32 * c;
          if (col < DV) o[o_b + row * o_sr + col] = (__T__)(acc[i][c] * inv);
        }
      }
    }
  }
}
"""


def flash_plan(dtype: str, d: int, dv: int) -> int:
    """Query rows per block (BQ) for head dims d, dv: the largest of 32, 16, 8, 4 whose
    shared memory fits in 48 KiB."""
    if dtype not in ACC:
        raise BackendError(f"cupy backend: flash attention for {dtype} is not implemented "
                           "(float32 and float64 are)")
    size = 8 if ACC[dtype] == "double" else 4
    kvw = max(d, dv) + 1
    for bq in (32, 16, 8, 4):
        if (bq * d + KEYS * kvw + bq * KEYS) * size <= SHARED_LIMIT:
            return bq
    raise BackendError(f"cupy backend: attention head dims d={d}, dv={dv} need more shared "
                       "memory than a block has (48 KiB); the flash kernel supports head "
                       f"dims up to about {SHARED_LIMIT // size // (2 * KEYS) - 8}")


def flash_name(dtype: str, d: int, dv: int) -> str:
    return f"graphc_flash_{dtype}_{d}_{dv}"


def flash_attention(dtype: str, d: int, dv: int) -> str:
    bq = flash_plan(dtype, d, dv)
    acc = ACC[dtype]
    subs = {"__NAME__": flash_name(dtype, d, dv), "__D__": str(d), "__DV__": str(dv),
            "__BQ__": str(bq), "__KVW__": str(max(d, dv) + 1), "__T__": CTYPES[dtype],
            "__A__": acc, "__EXP__": "expf" if acc == "float" else "exp",
            "__INF__": "GRAPHC_INF_F" if acc == "float" else "GRAPHC_INF_D",
            "THREADS_": str(THREADS)}
    src = _FLASH
    for key, val in subs.items():
        src = src.replace(key, val)
    return src
