"""The CPU emulation harness for CUDA C kernels (backends/cupy_gpu/cuda_emu.h, emulate.py).

Hand-written kernels that lean on each emulated construct (warp shuffles, shared memory,
__syncthreads, the launch geometry, atomics, math) run on fresh random inputs against
NumPy; the error paths raise BackendError with a useful message; and every kernel source
here also compiles with NVRTC for sm_80 and sm_90, so the emulator is tested on CUDA that
a GPU would accept.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from graphc.backends.cupy_gpu import nvrtc
from graphc.backends.cupy_gpu.emulate import EmulatedModule, find_kernels, library_path
from graphc.errors import BackendError

FULL = "0xffffffffu"

MAIN = r"""
// This thread's share of sum(x[0:n]) over a grid-stride loop (both block sums start so).
__device__ float grid_stride_sum(const float* __restrict__ x, long long n) {
  float v = 0.0f;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    v += x[i];
  return v;
}

// Block sum, xor butterfly: after the two shuffle rounds every thread holds the total.
extern "C" __global__ void k_sum_xor(const float* __restrict__ x, float* __restrict__ out,
                                     long long n) {
  __shared__ float partial[32];
  float v = grid_stride_sum(x, n);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float r = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
  out[(long long)blockIdx.x * blockDim.x + threadIdx.x] = r;
}

// Block sum, shfl_down: lane 0 of each warp, then thread 0, holds the total. Every
// thread runs the shuffles (block-uniform), only thread 0 stores.
extern "C" __global__ void k_sum_down(const float* __restrict__ x, float* __restrict__ out,
                                      long long n) {
  __shared__ float partial[32];
  float v = grid_stride_sum(x, n);
  for (unsigned int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float r = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.0f;
  for (unsigned int o = 16; o > 0; o >>= 1) r += __shfl_down_sync(0xffffffffu, r, o);
  if (threadIdx.x == 0) out[blockIdx.x] = r;
}

// Transpose through a 32x33 shared tile (the extra column avoids bank conflicts on a
// GPU); 2-D grid of 32x32 tiles, 2-D block of 32 x blockDim.y threads.
extern "C" __global__ void k_transpose(const float* __restrict__ in, float* __restrict__ out,
                                       long long rows, long long cols) {
  __shared__ float tile[32][33];
  const long long c0 = (long long)blockIdx.x * 32, r0 = (long long)blockIdx.y * 32;
  for (unsigned int j = threadIdx.y; j < 32; j += blockDim.y) {
    const long long r = r0 + j, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[j][threadIdx.x] = in[r * cols + c];
  }
  __syncthreads();
  for (unsigned int j = threadIdx.y; j < 32; j += blockDim.y) {
    const long long r = c0 + j, c = r0 + threadIdx.x;  // out is cols x rows
    if (r < cols && c < rows) out[r * rows + c] = tile[threadIdx.x][j];
  }
}

// Inclusive prefix sum of each block's chunk (Hillis-Steele, double-buffered in shared
// memory): every step reads what other threads wrote before the last barrier.
extern "C" __global__ void k_scan(const long long* __restrict__ x, long long* __restrict__ y,
                                  long long n) {
  __shared__ long long buf[2][1024];
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  int cur = 0;
  buf[0][threadIdx.x] = i < n ? x[i] : 0;
  __syncthreads();
  for (unsigned int off = 1; off < blockDim.x; off <<= 1) {
    long long v = buf[cur][threadIdx.x];
    if (threadIdx.x >= off) v += buf[cur][threadIdx.x - off];
    buf[cur ^ 1][threadIdx.x] = v;
    cur ^= 1;
    __syncthreads();
  }
  if (i < n) y[i] = buf[cur][threadIdx.x];
}

// Every shuffle mode with a width, plus a ballot; 6 results per thread.
extern "C" __global__ void k_shfl(const int* __restrict__ x, int* __restrict__ out, int src,
                                  int width, unsigned int delta) {
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const int v = x[t];
  out[t * 6 + 0] = __shfl_sync(0xffffffffu, v, src);
  out[t * 6 + 1] = __shfl_sync(0xffffffffu, v, src, width);
  out[t * 6 + 2] = __shfl_up_sync(0xffffffffu, v, delta, width);
  out[t * 6 + 3] = __shfl_down_sync(0xffffffffu, v, delta, width);
  out[t * 6 + 4] = __shfl_xor_sync(0xffffffffu, v, (int)delta, width);
  out[t * 6 + 5] = (int)__ballot_sync(0xffffffffu, v & 1);
}

// Shuffles move 4- and 8-byte values unchanged.
extern "C" __global__ void k_shfl_types(const double* __restrict__ xd, double* __restrict__ yd,
                                        const long long* __restrict__ xl,
                                        long long* __restrict__ yl,
                                        const unsigned int* __restrict__ xu,
                                        unsigned int* __restrict__ yu,
                                        const float* __restrict__ xf, float* __restrict__ yf) {
  const int t = threadIdx.x;
  yd[t] = __shfl_xor_sync(0xffffffffu, xd[t], 5);
  yl[t] = __shfl_down_sync(0xffffffffu, xl[t], 3);
  yu[t] = __shfl_up_sync(0xffffffffu, xu[t], 2);
  yf[t] = __shfl_sync(0xffffffffu, xf[t], 7);
}

// The launch geometry: where each (blockIdx, threadIdx) lands.
extern "C" __global__ void k_coords(int* __restrict__ out) {
  const long long block = ((long long)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x
                          + blockIdx.x;
  const long long thread = ((long long)threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x
                           + threadIdx.x;
  int* o = out + (block * blockDim.x * blockDim.y * blockDim.z + thread) * 6;
  o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
  o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
}

// Atomics across threads and blocks.
extern "C" __global__ void k_atomics(const int* __restrict__ x, long long n, int* hist,
                                     int nbins, float* total, int* maxv) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    atomicAdd(&hist[x[i] % nbins], 1);
    atomicAdd(total, (float)x[i]);
    atomicMax(maxv, x[i]);
  }
}

// Math functions, CUDA's overloads (sqrt(float) is float) and bit casts.
extern "C" __global__ void k_math(const float* __restrict__ x, float* __restrict__ y,
                                  const double* __restrict__ xd, double* __restrict__ yd,
                                  long long* __restrict__ yi, long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  const double w = xd[i];
  static_assert(sizeof(sqrt(v)) == 4 && sizeof(max(v, v)) == 4, "float overloads");
  float* o = y + i * 12;
  o[0] = expf(v); o[1] = __expf(v); o[2] = logf(fabsf(v) + 1.0f); o[3] = __logf(fabsf(v) + 1.0f);
  o[4] = sqrtf(fabsf(v)); o[5] = rsqrtf(fabsf(v) + 1.0f); o[6] = tanhf(v); o[7] = erff(v);
  o[8] = fmaxf(v, 0.25f) + fminf(v, -0.25f); o[9] = powf(fabsf(v), 1.5f);
  o[10] = max(v, 0.5f) - min(v, -0.5f); o[11] = sqrt(fabs(v));
  double* p = yd + i * 8;
  p[0] = exp(w); p[1] = log(fabs(w) + 1.0); p[2] = sqrt(fabs(w)); p[3] = rsqrt(fabs(w) + 1.0);
  p[4] = tanh(w); p[5] = erf(w); p[6] = fmax(w, 0.25) + fmin(w, -0.25); p[7] = pow(fabs(w), 1.5);
  long long* q = yi + i * 5;
  q[0] = max((int)i, 7) + min((int)i, 7);
  q[1] = max((long long)i * 3, 100LL) - min((long long)i, 5LL);
  q[2] = __float_as_int(v);
  q[3] = __double_as_longlong(w);
  q[4] = __float_as_int(__int_as_float((int)q[2])) == (int)q[2]
         && __double_as_longlong(__longlong_as_double(q[3])) == q[3];
}
"""

DIVERGENT = r"""
// Some threads of block 0 reach a barrier the others skip.
extern "C" __global__ void k_extra_barrier(float* __restrict__ out) {
  if (threadIdx.x < 16) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}
// Both branches have barriers, but not the same number.
extern "C" __global__ void k_unequal(float* __restrict__ out) {
  if (threadIdx.x < 16) { __syncthreads(); __syncthreads(); } else { __syncthreads(); }
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}
// A shuffle inside divergent control flow, in block 2 only.
extern "C" __global__ void k_shfl_divergent(float* __restrict__ out) {
  float v = threadIdx.x;
  if (blockIdx.x == 2 && threadIdx.x >= 40) v = __shfl_down_sync(0xffffffffu, v, 1);
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}
// The early return before a barrier (a classic bug that often works on a GPU).
extern "C" __global__ void k_early_return(const float* __restrict__ x, float* __restrict__ y,
                                          long long n) {
  __shared__ float s[256];
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  s[threadIdx.x] = x[i];
  __syncthreads();
  y[i] = s[(threadIdx.x + 1) % blockDim.x];
}
"""

COMPILE_ERROR = r"""extern "C" __global__ void k_bad(float* __restrict__ y) {
  float v = 1.0f;
  y[threadIdx.x] = v + undefined_name;
}
"""

EXTERN_SHARED = r"""extern "C" __global__ void k_dyn(float* __restrict__ y) {
  extern __shared__ float buf[];
  buf[threadIdx.x] = 1.0f;
  __syncthreads();
  y[threadIdx.x] = buf[0];
}
"""



def rel_err(got, ref) -> float:
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(np.asarray(got, np.float64) - ref) / np.linalg.norm(ref))


# How the threads of a block run: fibers of the launching thread (the default; x86-64's
# own switch, or POSIX ucontext elsewhere), or one OS thread each (-DGRAPHC_EMU_THREADS:
# a futex barrier, or the condition-variable one of systems without futexes). Every
# kernel below runs under each.
MODES = {
    "fibers": (),
    "ucontext": ("-DGRAPHC_EMU_UCONTEXT",),
    "threads": ("-DGRAPHC_EMU_THREADS",),
    "threads-portable": ("-DGRAPHC_EMU_THREADS", "-DGRAPHC_EMU_PORTABLE_BARRIER"),
}


@pytest.fixture(scope="module", params=[
    pytest.param(m, marks=[] if m == "fibers" else [pytest.mark.slow]) for m in MODES])
def main(request):
    return EmulatedModule(MAIN, cxx_options=MODES[request.param])


# ---- reductions, transpose, scan ---------------------------------------------------------

@pytest.mark.parametrize("block", [32, 64, 256])
def test_block_sums(main, rng, block):
    grid = 3
    n = 2 * grid * block + 37  # odd, not a multiple of the block: some threads add nothing
    x = rng.standard_normal(n).astype(np.float32)
    # block b adds the elements i with (i // block) % grid == b (grid-stride loop)
    owner = (np.arange(n) // block) % grid
    ref = np.array([x[owner == b].astype(np.float64).sum() for b in range(grid)])

    out = np.full(grid * block, np.nan, np.float32)
    main.get_function("k_sum_xor")((grid,), (block,), (x, out, np.int64(n)))
    per_thread = out.reshape(grid, block)
    assert (per_thread == per_thread[:, :1]).all()  # every thread holds the same total
    assert rel_err(per_thread[:, 0], ref) < 1e-6

    out = np.full(grid, np.nan, np.float32)
    main.get_function("k_sum_down")(grid, block, (x, out, np.int64(n)))
    assert rel_err(out, ref) < 1e-6


def test_tiled_transpose(main, rng):
    rows, cols = 45, 77
    a = rng.standard_normal((rows, cols)).astype(np.float32)
    out = np.zeros((cols, rows), np.float32)
    grid = (math.ceil(cols / 32), math.ceil(rows / 32))
    main.get_function("k_transpose")(grid, (32, 8), (a, out, np.int64(rows), np.int64(cols)))
    np.testing.assert_array_equal(out, a.T)


@pytest.mark.parametrize("block", [128, 256])
def test_block_scan_needs_barriers(main, rng, block):
    n = 3 * block + 11
    x = rng.integers(-1000, 1000, n, dtype=np.int64)
    y = np.zeros(n, np.int64)
    main.get_function("k_scan")((math.ceil(n / block),), (block,), (x, y, np.int64(n)))
    ref = np.concatenate([np.cumsum(x[s:s + block]) for s in range(0, n, block)])
    np.testing.assert_array_equal(y, ref)


MISSING_BARRIER = r"""
// Each thread reads its neighbour's shared slot (above for dir = 1, below for dir = -1)
// with the __syncthreads between the write and the read left out: a race on a GPU.
extern "C" __global__ void k_rotate(const float* __restrict__ x, float* __restrict__ y,
                                    int dir) {
  __shared__ float s[1024];
  const int t = threadIdx.x, n = blockDim.x;
  const long long base = (long long)blockIdx.x * n;
  s[t] = x[base + t];
  y[base + t] = s[(t + dir + n) % n];
}
"""


@pytest.mark.parametrize("direction", [1, -1])
def test_missing_barrier_gives_wrong_results_under_fibers(rng, direction):
    """The fibers run in ascending order in some blocks and descending in others, so a
    read of another thread's shared-memory write with no barrier between reads a stale
    value in some block, whichever neighbour it reads: the missing barrier shows as wrong
    numbers, not as a pass that a GPU would not reproduce."""
    mod = EmulatedModule(MISSING_BARRIER)
    block, blocks = 64, 4
    x = rng.standard_normal(block * blocks).astype(np.float32)
    y = np.zeros_like(x)
    mod.get_function("k_rotate")((blocks,), (block,), (x, y, np.int32(direction)))
    want = np.roll(x.reshape(blocks, block), -direction, axis=1).reshape(-1)
    wrong = (y != want).reshape(blocks, block).sum(axis=1)
    # ascending blocks: every thread that reads a later thread's slot is wrong; descending
    # ones: every thread that reads an earlier one's (with dir 1: the last thread's wrap)
    assert (wrong >= 1).all() and wrong.max() >= block - 1, wrong


# ---- shuffles ------------------------------------------------------------------------------

def shfl_reference(x, src, width, delta):
    """CUDA's documented semantics, per lane of each warp of 32."""
    n = x.size
    lane = np.arange(n) % 32
    warp0 = np.arange(n) - lane
    seg = lane - lane % width                     # first lane of the width segment
    out = np.zeros((n, 6), np.int64)
    out[:, 0] = x[warp0 + src % 32]
    out[:, 1] = x[warp0 + seg + src % width]
    up = lane % width >= delta                    # up: the source is in the same segment
    out[:, 2] = np.where(up, x[np.where(up, np.arange(n) - delta, 0)], x)
    down = lane % width + delta < width
    out[:, 3] = np.where(down, x[np.where(down, np.arange(n) + delta, 0)], x)
    j = lane ^ delta                              # xor: later segments give the own value
    ok = j // width <= lane // width
    out[:, 4] = np.where(ok, x[warp0 + np.where(ok, j, lane)], x)
    bits = (x & 1).reshape(-1, 32)
    ballot = (bits << np.arange(32)).sum(axis=1)
    out[:, 5] = np.repeat(ballot, 32).astype(np.uint32).view(np.int32).astype(np.int64)
    return out


@pytest.mark.parametrize("width,delta,src", [(32, 1, 0), (32, 5, 31), (16, 3, 9),
                                             (8, 2, 13), (4, 1, 2), (2, 1, 1)])
def test_shuffle_modes_and_width(main, rng, width, delta, src):
    block, grid = 64, 2
    x = rng.integers(-2**31, 2**31 - 1, block * grid, dtype=np.int64).astype(np.int32)
    out = np.zeros((block * grid, 6), np.int32)
    main.get_function("k_shfl")(grid, block, (x, out, np.int32(src), np.int32(width),
                                              np.uint32(delta)))
    np.testing.assert_array_equal(out, shfl_reference(x.astype(np.int64), src, width, delta))


def test_shuffle_types(main, rng):
    n = 64
    xd = rng.standard_normal(n)
    xl = rng.integers(-2**62, 2**62, n, dtype=np.int64)
    xu = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    xf = rng.standard_normal(n).astype(np.float32)
    ys = [np.zeros_like(a) for a in (xd, xl, xu, xf)]
    main.get_function("k_shfl_types")(1, n, (xd, ys[0], xl, ys[1], xu, ys[2], xf, ys[3]))
    lane, base = np.arange(n) % 32, np.arange(n) - np.arange(n) % 32
    np.testing.assert_array_equal(ys[0], xd[base + (lane ^ 5)])
    np.testing.assert_array_equal(ys[1], xl[np.where(lane + 3 < 32, np.arange(n) + 3,
                                                     np.arange(n))])
    np.testing.assert_array_equal(ys[2], xu[np.where(lane >= 2, np.arange(n) - 2,
                                                     np.arange(n))])
    np.testing.assert_array_equal(ys[3], xf[base + 7])


# ---- geometry, atomics, math ---------------------------------------------------------------

def test_launch_geometry(main):
    grid, block = (3, 2, 2), (4, 3, 2)
    nb, nt = np.prod(grid), np.prod(block)
    out = np.full((nb, nt, 6), -1, np.int32)
    main.get_function("k_coords")(grid, block, (out,))
    bz, by, bx = np.meshgrid(*(np.arange(g) for g in grid[::-1]), indexing="ij")
    tz, ty, tx = np.meshgrid(*(np.arange(b) for b in block[::-1]), indexing="ij")
    np.testing.assert_array_equal(out[:, :, 0], np.broadcast_to(tx.ravel(), (nb, nt)))
    np.testing.assert_array_equal(out[:, :, 1], np.broadcast_to(ty.ravel(), (nb, nt)))
    np.testing.assert_array_equal(out[:, :, 2], np.broadcast_to(tz.ravel(), (nb, nt)))
    for k, b in enumerate((bx, by, bz)):
        np.testing.assert_array_equal(out[:, :, 3 + k], np.repeat(b.ravel()[:, None], nt, 1))


def test_atomics(main, rng):
    n, nbins = 5000, 7
    x = rng.integers(0, 1000, n, dtype=np.int64).astype(np.int32)
    hist, total, maxv = np.zeros(nbins, np.int32), np.zeros(1, np.float32), np.zeros(1, np.int32)
    main.get_function("k_atomics")(4, 128, (x, np.int64(n), hist, np.int32(nbins), total, maxv))
    np.testing.assert_array_equal(hist, np.bincount(x % nbins, minlength=nbins))
    assert total[0] == x.sum()  # integers below 2**24: exact in float32
    assert maxv[0] == x.max()


def test_math(main, rng):
    n = 300
    x = (rng.standard_normal(n) * 2).astype(np.float32)
    xd = rng.standard_normal(n) * 2
    y, yd, yi = np.zeros((n, 12), np.float32), np.zeros((n, 8)), np.zeros((n, 5), np.int64)
    main.get_function("k_math")(2, 256, (x, y, xd, yd, yi, np.int64(n)))
    erf = np.vectorize(math.erf)
    v = x.astype(np.float64)
    ref = [np.exp(v), np.exp(v), np.log(abs(v) + 1), np.log(abs(v) + 1), np.sqrt(abs(v)),
           1 / np.sqrt(abs(v) + 1), np.tanh(v), erf(v),
           np.maximum(v, 0.25) + np.minimum(v, -0.25), abs(v) ** 1.5,
           np.maximum(v, 0.5) - np.minimum(v, -0.5), np.sqrt(abs(v))]
    for k, r in enumerate(ref):
        assert rel_err(y[:, k], r) < 1e-6, k
    w = xd
    ref = [np.exp(w), np.log(abs(w) + 1), np.sqrt(abs(w)), 1 / np.sqrt(abs(w) + 1), np.tanh(w),
           erf(w), np.maximum(w, 0.25) + np.minimum(w, -0.25), abs(w) ** 1.5]
    for k, r in enumerate(ref):
        assert rel_err(yd[:, k], r) < 1e-14, k
    i = np.arange(n)
    np.testing.assert_array_equal(yi[:, 0], np.maximum(i, 7) + np.minimum(i, 7))
    np.testing.assert_array_equal(yi[:, 1], np.maximum(3 * i, 100) - np.minimum(i, 5))
    np.testing.assert_array_equal(yi[:, 2], x.view(np.int32))
    np.testing.assert_array_equal(yi[:, 3], xd.view(np.int64))
    assert (yi[:, 4] == 1).all()


# ---- errors --------------------------------------------------------------------------------

DIVERGENT_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from graphc.backends.cupy_gpu.emulate import EmulatedModule, find_kernels, library_path
    from graphc.errors import BackendError
    mod = EmulatedModule(sys.stdin.read())
    print("cached", mod.cached)
    out = np.zeros(4 * 64, np.float32)
    x = np.ones(200, np.float32)
    launches = [("k_extra_barrier", (out,)), ("k_unequal", (out,)),
                ("k_shfl_divergent", (out,)), ("k_early_return", (x, out, np.int64(200)))]
    for name, args in launches:
        try:
            mod.get_function(name)((4,), (64,), args)
            print(name, "no error")
        except BackendError as e:
            print(name, "::", e)
    print("done")
""")


def test_divergent_barriers_fail_cleanly():
    """Barriers or shuffles that not every thread of a block reaches: a BackendError
    naming the kernel and block, never a hang (run in a subprocess with a timeout; it also
    finds the module in the on-disk cache)."""
    EmulatedModule(DIVERGENT)  # compile here, warm
    proc = subprocess.run([sys.executable, "-c", DIVERGENT_SCRIPT], input=DIVERGENT,
                          capture_output=True, encoding="utf-8", timeout=120,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert lines["cached"] == "True"
    phrase = ("threads reached __syncthreads a different number of times — a barrier "
              "inside divergent control flow")
    for name, block in [("k_extra_barrier", "(0,0,0)"), ("k_unequal", "(0,0,0)"),
                        ("k_shfl_divergent", "(2,0,0)"), ("k_early_return", "(3,0,0)")]:
        msg = lines[name]
        assert msg.startswith(":: CUDA emulation: kernel " + name), msg
        assert f"block {block}" in msg and phrase in msg, msg
    assert "done" in proc.stdout


def test_compile_error_shows_numbered_source():
    with pytest.raises(BackendError) as e:
        EmulatedModule(COMPILE_ERROR)
    msg = str(e.value)
    assert "kernel.cu:3" in msg and "undefined_name" in msg
    assert "3 |   y[threadIdx.x] = v + undefined_name;" in msg


def test_extern_shared_rejected():
    with pytest.raises(BackendError, match="dynamic shared memory"):
        EmulatedModule(EXTERN_SHARED)


def test_argument_errors(main):
    k = main.get_function("k_sum_down")
    x, out = np.zeros(100, np.float32), np.zeros(4, np.float32)
    with pytest.raises(BackendError, match=r"kernel k_sum_down, parameter 0 .*expected a "
                                           r"float32 array, got a float64 array"):
        k(1, 32, (x.astype(np.float64), out, np.int64(100)))
    with pytest.raises(BackendError, match=r"parameter 2 .*expected a int64 scalar, got int32"):
        k(1, 32, (x, out, np.int32(100)))
    with pytest.raises(BackendError, match=r"parameter 0 .*C-contiguous"):
        k(1, 32, (np.zeros(200, np.float32)[::2], out, np.int64(100)))
    ro = out.copy()
    ro.flags.writeable = False
    with pytest.raises(BackendError, match=r"parameter 1 .*read-only"):
        k(1, 32, (x, ro, np.int64(100)))
    with pytest.raises(BackendError, match="takes 3 arguments, got 2"):
        k(1, 32, (x, out))
    with pytest.raises(BackendError, match="not a valid CUDA block"):
        k(1, (64, 32), (x, out, np.int64(100)))
    with pytest.raises(BackendError, match="dynamic shared memory"):
        k(1, 32, (x, out, np.int64(100)), shared_mem=128)
    k(1, 32, (x, out, 100))  # a Python int is an int64, as in CuPy
    with pytest.raises(BackendError, match=r"no extern \"C\" __global__ kernel named "
                                           r"'k_nope' .*k_sum_down"):
        main.get_function("k_nope")


def test_kernel_lookup_and_parameter_errors():
    mod = EmulatedModule(TINY)
    with pytest.raises(BackendError, match="'k_mangled' is not declared extern \"C\""):
        mod.get_function("k_mangled")
    with pytest.raises(BackendError, match=r"kernel k_ptrptr, parameter 0 .*cannot pass a "
                                           r"parameter declared 'float\*\* p'"):
        mod.get_function("k_ptrptr")(1, 1, (np.zeros(1, np.float32),))


def test_parameter_parsing():
    src = """
    // extern "C" __global__ void k_commented(int x) {}
    extern "C" __global__ void __launch_bounds__(256) k1(float *x, const float *__restrict__ y,
        float const* z, unsigned char* m, bool flag, long long n, const double* __restrict__ w,
        int) {}
    extern "C" __global__ __launch_bounds__(128, 2) void k2(void) {}
    extern "C" __device__ void not_a_kernel(int n) {}
    """
    kernels = find_kernels(src)
    assert list(kernels) == ["k1", "k2"] and kernels["k2"] == []
    got = [(p.name, p.describe(), str(p.dtype)) for p in kernels["k1"]]
    assert got == [("x", "float*", "float32"), ("y", "const float*", "float32"),
                   ("z", "const float*", "float32"), ("m", "unsigned char*", "uint8"),
                   ("flag", "bool", "bool"), ("n", "long long", "int64"),
                   ("w", "const double*", "float64"), ("arg7", "int", "int32")]


def test_missing_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(BackendError, match="needs a C\\+\\+ compiler with OpenMP"):
        EmulatedModule(MAIN)


# ---- the cache ------------------------------------------------------------------------------

TINY = r"""extern "C" __global__ void __launch_bounds__(64) k_fill(float *y, float v,
                                                                 long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = v;
}
__global__ void k_mangled(float* y) { y[0] = 1.0f; }
extern "C" __global__ void k_ptrptr(float** p) { p[0][0] = 1.0f; }
"""


SOURCES = {"main": MAIN, "divergent": DIVERGENT, "extern_shared": EXTERN_SHARED,
           "tiny": TINY, "missing_barrier": MISSING_BARRIER}


def test_cache_rebuilds_corrupt_or_foreign_files(tmp_path):
    """A cached library that does not load, or was built from other source, is rebuilt."""
    foreign, garbage = TINY + "// foreign\n", TINY + "// garbage\n"
    other = EmulatedModule(MAIN)
    for src, content in [(foreign, other.path.read_bytes()), (garbage, b"not a library")]:
        path = library_path(src)
        tmp = tmp_path / "lib.so"
        tmp.write_bytes(content)
        os.replace(tmp, path)  # a new file, as a concurrent writer would leave it
        with pytest.warns(RuntimeWarning, match="does not load or does not match"):
            mod = EmulatedModule(src)
        assert not mod.cached and mod.path == path
        y = np.zeros(40, np.float32)
        mod.get_function("k_fill")(2, 32, (y, np.float32(2.5), np.int64(40)))
        assert (y == 2.5).all()
        assert EmulatedModule(src).cached  # the process keeps it


def test_precompiled_header_from_the_second_module(monkeypatch):
    """A process's second module (per compiler command) makes a precompiled header in a
    private folder, and later modules compile against it: -Werror=invalid-pch makes a
    .gch that g++ finds but cannot use an error, so these compiles prove it was used."""
    from graphc.backends.cupy_gpu import emulate
    monkeypatch.setattr(emulate, "_PCH", {})
    monkeypatch.setattr(emulate, "_PCH_SEEN", {})
    opts = ("-Winvalid-pch", "-Werror=invalid-pch")
    tag = os.urandom(8).hex()         # sources of their own: compiled, not from the cache
    mods = [EmulatedModule(TINY + f"// pch {tag} {i}\n", cxx_options=opts) for i in range(2)]
    assert not any(m.cached for m in mods)
    (copy,) = emulate._PCH.values()
    assert copy is not None and copy.read_text() == emulate.HEADER.read_text()
    assert (copy.parent / (copy.name + ".gch")).stat().st_size > 0
    assert oct(copy.parent.stat().st_mode & 0o777) == "0o700"
    for i, m in enumerate(mods):
        y = np.zeros(70, np.float32)
        m.get_function("k_fill")(3, 32, (y, np.float32(i + 0.5), np.int64(70)))
        assert (y == i + 0.5).all()


def test_concurrent_launches_from_threads(main, rng):
    """Launches from several Python threads (ctypes drops the GIL) take turns."""
    block, n = 64, 64 * 5 + 3
    xs = [rng.integers(-100, 100, n, dtype=np.int64) for _ in range(4)]
    ys = [np.zeros(n, np.int64) for _ in xs]
    scan = main.get_function("k_scan")
    threads = [threading.Thread(target=scan, args=(math.ceil(n / block), block,
                                                   (x, y, np.int64(n))))
               for x, y in zip(xs, ys)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, y in zip(xs, ys):
        ref = np.concatenate([np.cumsum(x[s:s + block]) for s in range(0, n, block)])
        np.testing.assert_array_equal(y, ref)


# ---- the same sources through NVRTC ----------------------------------------------------------

@pytest.mark.parametrize("arch", nvrtc.ARCHS)
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_sources_compile_with_nvrtc(name, arch):
    if not nvrtc.available():
        pytest.skip("NVRTC is not available (pip install 'graphc[gpu]')")
    ptx = nvrtc.compile_ptx(SOURCES[name], arch=arch, name=f"{name}.cu")
    for kernel in find_kernels(SOURCES[name]):
        assert f".entry {kernel}(" in ptx, kernel


def test_nvrtc_rejects_the_compile_error_too():
    if not nvrtc.available():
        pytest.skip("NVRTC is not available (pip install 'graphc[gpu]')")
    with pytest.raises(BackendError, match="undefined_name"):
        nvrtc.compile_ptx(COMPILE_ERROR, arch="sm_90")
