"""Mixture-of-experts code through graphc.from_torch: the ATen ops of sorting tokens by
expert (sort, topk, histc, cumsum, index_put, empty_permuted) and transformers' grouped
GEMM, on small hand-written modules and on tiny Mixtral / Qwen2-MoE models (quick on the
reference; numba, cupy-emu and torch.compile in the slow suite)."""
import numpy as np
import pytest

import graphc

torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
pytestmark = pytest.mark.compare

from arrays import rel_err as rel  # noqa: E402  (tests/arrays.py)
from graphc.frontend.torch import TorchImportError  # noqa: E402
from torch.export import Dim  # noqa: E402

TOL = 1e-5


class SortedExperts(torch.nn.Module):
    """A top-2 MoE written the way grouped-GEMM code sorts pairs by expert, with a plain
    per-expert loop over the sorted rows (no transformers): topk, sort, histc, cumsum,
    gather, index_put for the inverse permutation, a weighted sum per token."""

    def __init__(self, d=12, hidden=10, experts=4, k=2):
        super().__init__()
        torch.manual_seed(0)
        self.k, self.e = k, experts
        self.router = torch.nn.Linear(d, experts, bias=False)
        self.w1 = torch.nn.Parameter(torch.randn(experts, hidden, d) / d ** 0.5)
        self.w2 = torch.nn.Parameter(torch.randn(experts, d, hidden) / hidden ** 0.5)

    def forward(self, x):
        probs = torch.softmax(self.router(x), dim=-1)
        w, ids = torch.topk(probs, self.k, dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        flat = ids.reshape(-1)
        order_ids, perm = torch.sort(flat)
        rows = x[perm // self.k]
        counts = torch.histc(order_ids.float(), bins=self.e, min=0, max=self.e - 1)
        ends = torch.cumsum(counts, dim=0).to(torch.int64)
        start = torch.cat([torch.zeros(1, dtype=torch.int64), ends[:-1]])
        pos = torch.arange(rows.shape[0])
        out = torch.zeros(rows.shape[0], x.shape[-1])
        for e in range(self.e):     # every expert on every row, kept where its group is
            h = torch.relu(rows @ self.w1[e].T) @ self.w2[e].T
            keep = ((pos >= start[e]) & (pos < ends[e])).unsqueeze(-1)
            out = torch.where(keep, h, out)
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.shape[0])
        out = out[inv] * w.reshape(-1, 1)
        return out.view(x.shape[0], self.k, -1).sum(dim=1)


def _eager(m, x):
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_sorted_experts_one_compile_several_sizes(backend, rng):
    m = SortedExperts().eval()
    x0 = torch.randn(6, 12)
    g = graphc.from_torch(m, (x0,), dynamic_shapes=({0: Dim("N", min=2, max=64)},))
    ops = g.op_counts()
    assert {"sort", "index_put"} <= set(ops), ops
    exe = graphc.compile(g, backend=backend)
    for n in (3, 17, 40):
        x = rng.standard_normal((n, 12)).astype(np.float32)
        assert rel(exe(x), _eager(m, x)) < TOL, n


class Ops(torch.nn.Module):
    def forward(self, x, idx, v):
        s, order = torch.sort(x, dim=0, descending=True)
        low, low_i = torch.topk(x, 2, dim=-1, largest=False)
        h = torch.histc(x, bins=5, min=-1.0, max=1.0)         # values outside ignored
        acc = torch.zeros(x.shape[0], x.shape[1]).index_put((idx,), v, accumulate=True)
        return s, order, low, low_i, h, acc


@pytest.mark.parametrize("backend", ["reference", "numba", "cupy-emu"])
def test_selection_ops_match_torch(backend, rng):
    m = Ops()
    N = Dim("N", min=3, max=32)
    ex = (torch.randn(5, 4), torch.tensor([0, 2, 2, 1]), torch.randn(4, 4))
    g = graphc.from_torch(m, ex, dynamic_shapes=({0: N}, {0: Dim("M")}, {0: Dim("M")}))
    exe = graphc.compile(g, backend=backend)
    for n, k in ((7, 9), (4, 3)):
        x = rng.standard_normal((n, 4)).astype(np.float32)
        x[0, 0] = x[1, 0]                                      # a tie in the sort
        idx = rng.integers(0, n, k).astype(np.int64)
        v = rng.standard_normal((k, 4)).astype(np.float32)
        with torch.no_grad():
            want = m(*(torch.from_numpy(a) for a in (x, idx, v)))
        got = exe(x, idx, v)
        for gk, wk in zip(got, want):
            wk = wk.numpy()
            if wk.dtype == np.int64:     # sort order of distinct values; topk indices
                np.testing.assert_array_equal(np.take_along_axis(x, gk, 0 if gk.shape == x.shape else 1),
                                              np.take_along_axis(x, wk, 0 if wk.shape == x.shape else 1))
            else:
                np.testing.assert_allclose(gk, wk, rtol=1e-5, atol=1e-6)


def test_histc_without_bounds_is_a_clear_error():
    class H(torch.nn.Module):
        def forward(self, x):
            return torch.histc(x, bins=4)       # min == max == 0: the data's range
    with pytest.raises(TorchImportError, match="histc with min == max"):
        graphc.from_torch(H(), (torch.randn(8),))
