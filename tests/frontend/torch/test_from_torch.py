"""graphc.from_torch on small hand-written modules: Dims become symbols (with ranges), one
compile serves several sizes, parameters are shared (not copied), attention is fused, an
unsupported op's error lists every one with the model's lines before anything is built,
and a translation error names the user's line."""
import inspect
import subprocess
import sys

import numpy as np
import pytest

import graphc

torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
pytestmark = pytest.mark.compare

from torch.export import Dim  # noqa: E402

from graphc.frontend.torch import TorchImportError, UnsupportedOpError  # noqa: E402
from graphc.lower.program import AttentionStep  # noqa: E402
from graphc.ir.dims import Sym  # noqa: E402

TOL = 1e-5


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


class Block(torch.nn.Module):
    """A pre-norm attention block: layernorm, qkv linear, causal sdpa, gelu MLP."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.heads = heads
        self.ln = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.out = torch.nn.Linear(d, d)
        self.up = torch.nn.Linear(d, 2 * d)
        self.down = torch.nn.Linear(2 * d, d)

    def forward(self, x):
        B, S, d = x.shape
        q, k, v = self.qkv(self.ln(x)).split(d, dim=-1)
        q, k, v = (t.view(B, S, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(a.transpose(1, 2).reshape(B, S, d))
        return x + self.down(torch.nn.functional.gelu(self.up(x)))


def _block():
    torch.manual_seed(0)
    return Block().eval()


def _eager(m, x):
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def test_dims_become_symbols_one_compile_several_sizes(rng):
    m = _block()
    x0 = torch.randn(2, 7, 32)
    g = graphc.from_torch(m, (x0,), dynamic_shapes=({0: Dim("B", max=8), 1: Dim("S", max=64)},))
    assert g.input_types[0].shape == (Sym.of("B"), Sym.of("S"), 32)
    assert g.meta["torch"]["dims"]["S"][1] == 64
    exe = graphc.compile(g, backend="reference")
    for B, S in [(1, 3), (2, 7), (3, 20)]:
        x = rng.standard_normal((B, S, 32)).astype(np.float32)
        assert rel(exe(x), _eager(m, x)) < TOL, (B, S)


def test_static_shapes_and_kwargs(rng):
    class M(torch.nn.Module):
        def forward(self, x, *, y):
            return torch.softmax(x @ y.T, dim=-1).sum(dim=0, keepdim=True)

    x = rng.standard_normal((4, 6)).astype(np.float32)
    y = rng.standard_normal((5, 6)).astype(np.float32)
    g = graphc.from_torch(M(), (torch.from_numpy(x),), kwargs={"y": torch.from_numpy(y)})
    assert [t.shape for t in g.input_types] == [(4, 6), (5, 6)]
    with torch.no_grad():
        want = M()(torch.from_numpy(x), y=torch.from_numpy(y)).numpy()
    assert rel(graphc.compile(g)(x, y), want) < TOL


def test_parameters_are_shared_not_copied():
    m = _block()
    g = graphc.from_torch(m, (torch.randn(2, 5, 32),))
    weight = m.qkv.weight.detach().numpy()
    consts = [a for a in g.constants.values() if a.shape == weight.shape]
    assert any(np.shares_memory(a, weight) for a in consts)


@pytest.mark.slow   # a numba compile (fusion on the HF families: test_hf_models, slow)
def test_sdpa_becomes_one_fused_attention_step(rng):
    m = _block()
    g = graphc.from_torch(m, (torch.randn(2, 7, 32),),
                          dynamic_shapes=({0: Dim("B", max=8), 1: Dim("S", max=64)},))
    exe = graphc.compile(g, backend="numba")
    steps = [s for s in exe.program.steps if isinstance(s, AttentionStep)]
    assert len(steps) == 1 and steps[0].causal
    for B, S in [(1, 4), (3, 19)]:
        x = rng.standard_normal((B, S, 32)).astype(np.float32)
        assert rel(exe(x), _eager(m, x)) < TOL, (B, S)


class GQA(torch.nn.Module):
    def forward(self, q, k, v, mask):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                enable_gqa=True, scale=0.3)


def test_sdpa_gqa_bool_mask_and_scale(rng):
    q = rng.standard_normal((2, 4, 6, 8)).astype(np.float32)
    k = rng.standard_normal((2, 2, 6, 8)).astype(np.float32)
    v = rng.standard_normal((2, 2, 6, 8)).astype(np.float32)
    mask = rng.random((2, 1, 6, 6)) < 0.7
    mask[..., 0] = True
    args = [torch.from_numpy(a) for a in (q, k, v, mask)]
    g = graphc.from_torch(GQA(), args)
    want = GQA()(*args).numpy()
    assert rel(graphc.compile(g)(q, k, v, mask), want) < TOL


class TwoUnsupported(torch.nn.Module):
    def forward(self, x):
        y = torch.kthvalue(x, 2, dim=-1).values[:, None]  # UNSUPPORTED-1
        z = torch.linalg.qr(x).Q                  # UNSUPPORTED-2
        return y + z


def _line_of(marker):
    src, start = inspect.getsourcelines(TwoUnsupported)
    return start + next(i for i, line in enumerate(src) if marker in line)


def test_unsupported_ops_listed_at_once_with_lines():
    with pytest.raises(UnsupportedOpError) as e:
        graphc.from_torch(TwoUnsupported(), (torch.randn(4, 4),))
    msg = str(e.value)
    assert "aten.kthvalue" in msg and "linalg_qr" in msg, msg
    for marker in ("UNSUPPORTED-1", "UNSUPPORTED-2"):
        assert f"test_from_torch.py:{_line_of(marker)}" in msg, msg
    assert len(e.value.unsupported) == 2


class Dropping(torch.nn.Module):
    def forward(self, q):
        return torch.ops.aten.scaled_dot_product_attention(q, q, q, dropout_p=0.5)  # DROP


def test_translation_error_names_the_users_line():
    with pytest.raises(TorchImportError) as e:
        graphc.from_torch(Dropping(), (torch.randn(1, 2, 3, 4),))
    src, start = inspect.getsourcelines(Dropping)
    line = start + next(i for i, s in enumerate(src) if "# DROP" in s)
    msg = str(e.value)
    assert "dropout_p=0.5" in msg and f"test_from_torch.py:{line}" in msg, msg
    assert e.value.loc.lineno == line


def test_half_precision_is_a_clear_error():
    m = torch.nn.Linear(4, 4).half()
    with pytest.raises(TorchImportError, match="float16.*model.float"):
        graphc.from_torch(m, (torch.randn(2, 4).half(),))


def test_import_graphc_does_not_import_torch():
    code = "import sys, graphc; graphc.from_torch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


class Window(torch.nn.Module):
    """A size through max() (MPT's alibi: max(0, cache - S)), decided by the ranges."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.randn(1, 64))

    def forward(self, x):
        start = max(0, self.table.size(1) - x.size(1))       # the last S columns
        return self.table[:, start:] * x.sum()


def test_max_of_sizes_decided_by_the_dims_ranges(rng):
    m = Window()
    g = graphc.from_torch(m, (torch.randn(2, 8),),
                          dynamic_shapes=({1: Dim("S", min=2, max=64)},))
    exe = graphc.compile(g)
    for S in (3, 64):
        x = rng.standard_normal((2, S)).astype(np.float32)
        assert rel(exe(x), _eager(m, x)) < TOL
    # past the range the decision was made for: an InputError, not another answer
    for backend in ("reference", "numba"):
        with pytest.raises(graphc.InputError, match="outside the range 2..64"):
            graphc.compile(g, backend=backend)(np.ones((2, 70), np.float32))
    # with no upper bound, max(0, 64 - S) depends on S: a clear error, not a guess
    with pytest.raises(TorchImportError, match="depends on which argument is larger"):
        graphc.from_torch(m, (torch.randn(2, 8),), dynamic_shapes=({1: Dim("S", min=2)},))


CONVS = [   # (conv, input shape, dims): 1-d to 3-d, strides, padding, dilation, patches
    (lambda: torch.nn.Conv1d(5, 7, 3, padding=1), (2, 5, 19), {2: Dim("L", min=4, max=64)}),
    (lambda: torch.nn.Conv1d(5, 6, 3, stride=2, padding=1), (2, 5, 20), {0: Dim("B", max=8)}),
    (lambda: torch.nn.Conv1d(4, 3, 4, dilation=2, bias=False), (3, 4, 17), {}),
    (lambda: torch.nn.Conv2d(3, 8, 4, stride=4), (2, 3, 16, 12), {0: Dim("B", max=8)}),
    (lambda: torch.nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0)), (2, 3, 9, 7), {}),
    (lambda: torch.nn.Conv3d(2, 3, (2, 3, 2), stride=(1, 2, 1), padding=(0, 1, 1)),
     (2, 2, 5, 7, 4), {}),
    (lambda: torch.nn.Conv1d(4, 6, 3, groups=2, padding=1), (2, 4, 13), {2: Dim("L", max=64)}),
    (lambda: torch.nn.Conv2d(6, 6, 3, groups=6, padding=1), (2, 6, 7, 5), {}),   # depthwise
    (lambda: torch.nn.Conv1d(8, 8, 4, groups=8, padding=2), (1, 8, 9), {}),      # wav2vec2 style
]


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("k", range(len(CONVS)))
def test_convolution_as_a_gemm(k, backend, rng):
    """Conv1d / Conv2d (Whisper's front end, a ViT patch embedding, grouped and
    depthwise ones) against torch."""
    make, shape, dims = CONVS[k]
    torch.manual_seed(k)
    m = make().eval()
    x0 = torch.randn(*shape)
    g = graphc.from_torch(m, (x0,), dynamic_shapes=(dims,) if dims else None)
    exe = graphc.compile(g, backend=backend)
    sizes = [shape] + ([tuple(s + 3 if a in dims else s for a, s in enumerate(shape))]
                       if dims else [])
    for s in sizes:
        x = rng.standard_normal(s).astype(np.float32)
        assert rel(exe(x), _eager(m, x)) < TOL, s


def test_strided_convolution_over_a_dynamic_length_is_a_clear_error():
    m = torch.nn.Conv1d(5, 6, 3, stride=2, padding=1)
    with pytest.raises(TorchImportError, match=r"floor\(\(L-1\) / 2\).*divide exactly"):
        graphc.from_torch(m, (torch.randn(2, 5, 20),),
                          dynamic_shapes=({2: Dim("L", min=4, max=64)},))


class Norms(torch.nn.Module):
    """GroupNorm (affine and not) and vector norms of several orders, the pieces of
    wav2vec2's feature encoder and of weight norm."""

    def __init__(self):
        super().__init__()
        self.gn = torch.nn.GroupNorm(3, 6)
        self.plain = torch.nn.GroupNorm(2, 6, affine=False)
        with torch.no_grad():
            self.gn.weight.copy_(torch.randn(6))
            self.gn.bias.copy_(torch.randn(6))

    def forward(self, x):
        n2 = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
        n1 = torch.linalg.vector_norm(x, ord=1, dim=-1)
        ninf = torch.linalg.vector_norm(x, ord=float("inf"), dim=1)
        n3 = x.norm(p=3, dim=-1)
        return self.gn(x) + self.plain(x) + x / n2, n1, ninf, n3


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_group_norm_and_vector_norms(backend, rng):
    torch.manual_seed(0)
    m = Norms().eval()
    g = graphc.from_torch(m, (torch.randn(2, 6, 5),),
                          dynamic_shapes=({2: Dim("L", min=2, max=64)},))
    exe = graphc.compile(g, backend=backend)
    for L in (5, 11):
        x = rng.standard_normal((2, 6, L)).astype(np.float32)
        with torch.no_grad():
            want = [t.numpy() for t in m(torch.from_numpy(x))]
        got = exe(x)
        for gi, wi in zip(got, want):
            assert gi.shape == wi.shape and rel(gi, wi) < TOL, L


def test_torch_compile_of_a_strided_conv_over_a_dynamic_length(rng):
    """torch.compile(dynamic=True) of a stride-2 conv: its output length floor((L-1)/2)
    is no polynomial of L, so graphc compiles that graph once per length, says so in a
    warning, and every length matches eager."""
    torch._dynamo.reset()
    m = torch.nn.Sequential(torch.nn.Conv1d(5, 6, 3, stride=2, padding=1), torch.nn.GELU()).eval()
    fast = torch.compile(m, backend="graphc", dynamic=True)
    with pytest.warns(UserWarning, match="once per input size.*floor"):
        with torch.no_grad():
            for L in (20, 27, 31, 20):
                x = torch.from_numpy(rng.standard_normal((2, 5, L)).astype(np.float32))
                got = fast(x)
                assert rel(got.numpy(), m(x).numpy()) < TOL, L


def test_large_kernel_taps_are_one_gather(rng):
    """ConvNeXt's 7x7 depthwise conv: its 49 taps are one take_along_axis of the padded
    input (not 49 slices concatenated, a kernel LLVM took minutes to compile), and the
    result matches torch."""
    torch.manual_seed(0)
    m = torch.nn.Conv2d(8, 8, 7, padding=3, groups=8).eval()
    g = graphc.from_torch(m, (torch.randn(2, 8, 9, 9),))
    ops_used = [n.op for n in g.nodes.values()]
    # the zero padding's concats (two per spatial dim), not one of 49 taps
    assert ops_used.count("take_along_axis") == 1 and ops_used.count("concat") == 4, ops_used
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    assert rel(graphc.compile(g, backend="reference")(x), _eager(m, x)) < TOL


def test_transposed_convolution_is_a_clear_error():
    m = torch.nn.ConvTranspose1d(4, 4, 3)
    with pytest.raises(TorchImportError, match="transposed convolution"):
        graphc.from_torch(m, (torch.randn(1, 4, 9),))


class Padded(torch.nn.Module):
    """F.pad (constant_pad_nd): a conv with padding='same' and an even kernel exports it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(3, 4, 4, padding="same")

    def forward(self, x):
        y = torch.nn.functional.pad(x, (2, -1, 1, 0), value=0.5)      # a crop too
        return self.conv(x), y


def test_constant_pad_and_same_padding(rng):
    m = Padded().eval()
    g = graphc.from_torch(m, (torch.randn(2, 3, 9),),
                          dynamic_shapes=({2: Dim("L", min=4, max=64)},))
    exe = graphc.compile(g, backend="numba")
    for L in (9, 14):
        x = rng.standard_normal((2, 3, L)).astype(np.float32)
        with torch.no_grad():
            want = m(torch.from_numpy(x))
        for got, w in zip(exe(x), want):
            assert rel(got, w.numpy()) < TOL, L
