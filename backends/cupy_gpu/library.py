"""Native opaque ops for the cupy backend's ``LibraryStep`` (DeepSeek-V2's ``rope``,
``topk`` and ``moe``): CUDA kernels that go into the program's module with the generated
ones (so NVRTC compiles them for sm_80/sm_90 and the CPU emulation runs them, like every
other kernel of the backend), and cuBLAS (``xp.matmul``) for the MoE's expert GEMMs.
An opaque op not handled here runs its NumPy reference on the host, with a
``LibraryFallbackWarning`` at compile time.

- ``rope``: one thread per rotated pair (interleaved or rotate-half; positions [S] or
  [B, S]) or passed-through dim (past ``rotary_dim``); the angle ``position * inv_freq``,
  its cos and sin and the scale in the dtype of x, as the reference computes them.
- ``topk``: one thread per row, k selection passes over the row (largest first, ties to
  the lower index, NaN last: the order of the reference's stable argsort), each pass
  taking the best element ranked after the previous pick (no per-row scratch).
- ``moe``: the routing on the host (the [N, K] expert indices come back, N*K integers:
  a range check, a stable counting sort of the pairs by expert, each token's K sorted
  positions), then on the device: a gather of the routed rows into expert order, per
  used expert two GEMMs on its contiguous block of rows (``gate_up``, ``down``), SwiGLU
  on all rows between them, and a combine that sums each token's K outputs times its
  routing weights in increasing expert order (the reference's order; NVRTC fuses the
  multiply-adds, so a GPU rounds them differently from NumPy, the emulation does not).
- ``topk`` makes k passes over a row in one thread: meant for router rows (the number of
  experts), not for a vocabulary.
- ``grouped_matmul``: the offsets come back to the host (E integers, checked), then one
  GEMM per non-empty group on its contiguous rows (``xp.matmul``), the rows past the last
  offset zeroed.
- ``sort`` (stable, torch's NaN order) and ``index_put``: the reference's NumPy code on the
  host, copied back; they serve the bookkeeping of MoE code that sorts tokens by expert
  (a few thousand integers), not bulk data.
"""
from __future__ import annotations

import numpy as np

from graphc.errors import InputError
from graphc.lower.program import LibraryStep

from .render import CTYPES

BLOCK = 256                  # threads per block on a GPU (grid-stride loops)

# Shared by the kernels below (once per module).
PRELUDE = r"""
// graphc library ops: a ranks before b in topk's order (larger first, NaN last, ties to
// the lower index)
template <typename T>
__device__ __forceinline__ bool graphc_ranks_before(T a, long long ia, T b, long long ib) {
  const bool na = a != a, nb = b != b;
  if (na || nb) return nb && (!na || ia < ib);
  if (a != b) return a > b;
  return ia < ib;
}
"""

_ROPE = r"""
// x, out [B, M, S, D], pos [P, S] (P = 1 or B). Element e < h + (D - r) of a row: the
// pair e (x[e], x[e + h]) when half, else (x[2e], x[2e+1]), rotated by
// pos[b % P, s] * inv[e], cos and sin times scale; then dims r..D copied.
extern "C" __global__ void __NAME__(const __T__* x, const __P__* pos, const __T__* inv,
                                    double scale, __T__* out, long long B, long long M,
                                    long long S, long long D, long long P, long long r,
                                    int half) {
  const long long h = r / 2, w = h + (D - r), total = B * M * S * w;
  const __T__ sc = (__T__)scale;
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
       e += (long long)gridDim.x * blockDim.x) {
    const long long i = e % w, row = e / w, s = row % S, b = row / (M * S);
    const long long base = row * D;
    if (i >= h) {
      const long long j = base + r + (i - h);
      out[j] = x[j];
      continue;
    }
    const long long o0 = base + (half ? i : 2 * i), o1 = o0 + (half ? h : 1);
    const __T__ a = (__T__)pos[(b % P) * S + s] * inv[i];
    const __T__ c = cos(a) * sc, sn = sin(a) * sc;
    const __T__ x0 = x[o0], x1 = x[o1];
    out[o0] = x0 * c - x1 * sn;
    out[o1] = x0 * sn + x1 * c;
  }
}
"""

_TOPK = r"""
extern "C" __global__ void __NAME__(const __T__* x, long long* idx, __T__* vals,
                                    int want_values, long long R, long long n, long long k) {
  for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < R;
       r += (long long)gridDim.x * blockDim.x) {
    const __T__* row = x + r * n;
    __T__ pv = 0;
    long long pi = -1;
    for (long long j = 0; j < k; ++j) {
      __T__ bv = 0;
      long long best = -1;
      for (long long i = 0; i < n; ++i) {
        const __T__ v = row[i];
        if (pi >= 0 && !graphc_ranks_before(pv, pi, v, i)) continue;   // picked already
        if (best < 0 || graphc_ranks_before(v, i, bv, best)) {
          best = i;
          bv = v;
        }
      }
      if (want_values) vals[r * k + j] = bv;
      else idx[r * k + j] = best;
      pv = bv;
      pi = best;
    }
  }
}
"""

_MOE = r"""
extern "C" __global__ void __NAME___gather(const __T__* x, const long long* order,
                                           long long K, __T__* xs, long long M, long long H) {
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < M * H;
       e += (long long)gridDim.x * blockDim.x) {
    const long long p = e / H;
    xs[e] = x[(order[p] / K) * H + (e - p * H)];
  }
}

extern "C" __global__ void __NAME___swiglu(const __T__* gu, __T__* h, long long M,
                                           long long I) {
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < M * I;
       e += (long long)gridDim.x * blockDim.x) {
    const long long p = e / I, j = e - p * I;
    const __T__ g = gu[p * 2 * I + j];
    h[e] = g * graphc_sigmoid(g) * gu[p * 2 * I + I + j];
  }
}

extern "C" __global__ void __NAME___combine(const __T__* ys, const long long* pos,
                                            const __T__* w, __T__* out, long long N,
                                            long long K, long long H) {
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < N * H;
       e += (long long)gridDim.x * blockDim.x) {
    const long long n = e / H, c = e - n * H;
    __T__ acc = 0;
    for (long long q = 0; q < K; ++q) {
      const __T__ term = w[n * K + q] * ys[pos[n * K + q] * H + c];
      acc = acc + term;
    }
    out[e] = acc;
  }
}
"""

FLOATS = ("float32", "float64")


def _types(step, node):
    return [step.body.nodes[i].type for i in node.inputs]


def plan(step):
    """([kernel names], CUDA source, make(exe) -> run(out, ops)) for a LibraryStep this
    module implements, else None."""
    node = step.single_op()
    if node is None:
        return None
    types = _types(step, node)
    if node.op == "rope":
        x_t, p_t, i_t = types
        if x_t.dtype not in FLOATS or i_t.dtype != x_t.dtype or p_t.dtype not in CTYPES:
            return None
        name = f"graphc_rope_{x_t.dtype}_{p_t.dtype}"
        src = (_ROPE.replace("__NAME__", name).replace("__T__", CTYPES[x_t.dtype])
               .replace("__P__", CTYPES[p_t.dtype]))
        return [name], src, lambda exe: _rope(exe, name, dict(node.attrs))
    if node.op == "topk":
        (x_t,) = types
        if x_t.dtype not in FLOATS:
            return None
        name = f"graphc_topk_{x_t.dtype}"
        src = _TOPK.replace("__NAME__", name).replace("__T__", CTYPES[x_t.dtype])
        return [name], src, lambda exe: _topk(exe, name, dict(node.attrs), x_t.np_dtype)
    if node.op == "moe":
        x_t, w_t, i_t, gu_t, d_t = types
        if (x_t.dtype not in FLOATS or i_t.dtype not in ("int32", "int64")
                or {w_t.dtype, gu_t.dtype, d_t.dtype} != {x_t.dtype}
                or node.attrs.get("activation", "silu") != "silu"):
            return None
        name = f"graphc_moe_{x_t.dtype}"
        src = _MOE.replace("__NAME__", name).replace("__T__", CTYPES[x_t.dtype])
        return ([f"{name}_{k}" for k in ("gather", "swiglu", "combine")], src,
                lambda exe: _moe(exe, name))
    if node.op == "grouped_matmul":
        if types[0].dtype not in FLOATS:
            return None
        return [], "", lambda exe: _grouped_matmul(exe, bool(node.attrs["transpose_w"]))
    if node.op in ("sort", "index_put"):
        return [], "", lambda exe: _on_host(exe, node.op, dict(node.attrs))
    return None


def plans(program) -> dict:
    """:func:`plan` of each LibraryStep of the program, by step node id (None: the step
    runs its NumPy reference on the host)."""
    return {s.node: plan(s) for s in program.steps if isinstance(s, LibraryStep)}


def sources(plans: dict) -> tuple[list[str], str]:
    """(the names of the library kernels the :func:`plans` need, their CUDA source)."""
    names, texts = [], {}
    for p in plans.values():
        if p is not None and p[0]:
            names += [n for n in p[0] if n not in names]
            texts.setdefault(p[0][0], p[1])
    return names, (PRELUDE + "".join(texts.values())) if texts else ""


def bind(plans: dict, exe) -> dict:
    """Runners by step node id for the steps the :func:`plans` implement here."""
    return {node: p[2](exe) for node, p in plans.items() if p is not None}


# -- the runners -----------------------------------------------------------------------

def _grid(exe, work: int) -> tuple[int, int]:
    from .runtime import EMULATED_BLOCK, EMULATED_MAX_GRID, MAX_GRID
    block = EMULATED_BLOCK if exe.emulate else BLOCK
    return min(-(-work // block), EMULATED_MAX_GRID if exe.emulate else MAX_GRID), block


def _launch(exe, name, work, args):
    if work > 0:
        blocks, block = _grid(exe, work)
        exe._launch(name, blocks, block, args)


def _contig(exe, a):
    return exe.xp.ascontiguousarray(a)


def _host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def _rope(exe, name, attrs):
    scale = float(attrs["scale"])
    half = int(attrs.get("layout", "interleaved") == "half")
    rotary_dim = attrs.get("rotary_dim")

    def run(out, ops):
        x, pos, inv = (_contig(exe, a) for a in ops)
        S, D = x.shape[-2], x.shape[-1]
        r = D if rotary_dim is None else int(rotary_dim)
        # x [B, M, S, D]: B the first dim for positions [B, S] (or [1, S]), else 1
        B = x.shape[0] if pos.ndim == 2 else 1
        P = pos.shape[0] if pos.ndim == 2 else 1
        M = x.size // max(B * S * D, 1)
        o = out if out.flags.c_contiguous else exe.xp.empty(out.shape, out.dtype)
        _launch(exe, name, B * M * S * (r // 2 + D - r),
                [x, pos, inv, np.float64(scale), o, np.int64(B), np.int64(M), np.int64(S),
                 np.int64(D), np.int64(P), np.int64(r), np.int32(half)])
        if o is not out:
            out[...] = o
    return run


def _topk(exe, name, attrs, dtype):
    k, values = int(attrs["k"]), attrs["output"] == "values"

    axis = attrs["axis"]

    def run(out, ops):
        x = ops[0]
        last = axis == x.ndim - 1
        # another axis than the last: the rows are made contiguous (one copy each way)
        x = _contig(exe, x if last else exe.xp.moveaxis(x, axis, -1))
        n = x.shape[-1]
        if k > n:
            from graphc.ops.selection import topk
            topk(_host(x), **attrs)             # raises the reference's error
        R = x.size // max(n, 1)
        out = out if last else exe.xp.moveaxis(out, axis, -1)     # a view of the output
        o = out if out.flags.c_contiguous else exe.xp.empty(out.shape, out.dtype)
        dummy_idx = exe.xp.empty(1, np.int64)
        dummy_val = exe.xp.empty(1, dtype)
        _launch(exe, name, R, [x, dummy_idx if values else o, o if values else dummy_val,
                               np.int32(values), np.int64(R), np.int64(n), np.int64(k)])
        if o is not out:
            out[...] = o
    return run


def _moe(exe, name):
    def run(out, ops):
        xp = exe.xp
        x, w, indices, gate_up, down = (_contig(exe, a) for a in ops)
        N, H = x.shape
        K = indices.shape[1]
        E, I = gate_up.shape[0], down.shape[2]
        M = N * K
        o = out if out.flags.c_contiguous else xp.empty(out.shape, out.dtype)
        if M == 0:
            o[...] = 0
        else:
            idx = _host(indices).astype(np.int64).ravel()
            bad = (idx < 0) | (idx >= E)
            if bad.any():
                raise InputError(f"moe(): expert index {int(idx[bad][0])} is out of range "
                                 f"for {E} experts")
            order = np.argsort(idx, kind="stable")            # sorted position -> pair
            offsets = np.concatenate([[0], np.cumsum(np.bincount(idx, minlength=E))])
            slot = np.empty(M, np.int64)
            slot[order] = np.arange(M)
            per_token = slot.reshape(N, K)
            perm = np.argsort(per_token, axis=1)               # each token's K by expert
            pos = np.take_along_axis(per_token, perm, axis=1)
            ws = xp.ascontiguousarray(xp.take_along_axis(w, xp.asarray(perm), axis=1))
            order_d, pos_d = xp.asarray(order), xp.ascontiguousarray(xp.asarray(pos))
            xs = xp.empty((M, H), x.dtype)
            gu = xp.empty((M, 2 * I), x.dtype)
            h = xp.empty((M, I), x.dtype)
            ys = xp.empty((M, H), x.dtype)
            _launch(exe, f"{name}_gather", M * H,
                    [x, order_d, np.int64(K), xs, np.int64(M), np.int64(H)])
            used = [e for e in range(E) if offsets[e + 1] > offsets[e]]
            for e in used:
                a, b = int(offsets[e]), int(offsets[e + 1])
                xp.matmul(xs[a:b], gate_up[e].T, out=gu[a:b])
            _launch(exe, f"{name}_swiglu", M * I, [gu, h, np.int64(M), np.int64(I)])
            for e in used:
                a, b = int(offsets[e]), int(offsets[e + 1])
                xp.matmul(h[a:b], down[e].T, out=ys[a:b])
            _launch(exe, f"{name}_combine", N * H,
                    [ys, pos_d, ws, o, np.int64(N), np.int64(K), np.int64(H)])
        if o is not out:
            out[...] = o
    return run


def _grouped_matmul(exe, transposed):
    from graphc.ops.moe import grouped_bounds

    def run(out, ops):
        x, w, offsets = ops
        bounds = grouped_bounds(_host(offsets), x.shape[0])
        end = bounds[-1][2] if bounds else 0
        out[end:] = 0
        for e, a, b in bounds:
            exe.xp.matmul(x[a:b], w[e].T if transposed else w[e], out=out[a:b])
    return run


def _on_host(exe, op, attrs):
    from graphc.ops.registry import get_op
    reference = get_op(op).reference

    def run(out, ops):
        out[...] = exe.xp.asarray(reference(*[_host(a) for a in ops], **attrs))
    return run
