"""torch.compile(model, backend="graphc"): the registered name, graphc.torch_backend's
options, torch tensors in and out, dynamic sizes without recompiling, graph breaks, and
the inference-only error."""
import numpy as np
import pytest

import graphc

torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
pytestmark = pytest.mark.compare

from graphc.frontend.torch import InferenceOnlyError  # noqa: E402


def rel(a, b):
    a, b = a.double(), b.double()
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


class MLP(torch.nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.ln = torch.nn.LayerNorm(d)
        self.up = torch.nn.Linear(d, 2 * d)
        self.down = torch.nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(self.ln(x))))


class Broken(MLP):
    """A graph break in the middle (a print): dynamo hands over two graphs."""

    def forward(self, x):
        h = torch.relu(self.up(self.ln(x)))
        print("graph break")
        return x + self.down(h) * h.mean()


def _counting(inner):
    calls = []

    def backend(gm, example_inputs):
        out = inner(gm, example_inputs)     # counted when compiled: dynamo may restart
        calls.append(len(gm.graph.nodes))   # its analysis (TensorifyScalarRestartAnalysis)
        return out
    return backend, calls


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_registered_name_is_listed():
    # the torch_dynamo_backends entry point (pyproject.toml), found without importing graphc
    assert "graphc" in torch._dynamo.list_backends(exclude_tags=())


@pytest.mark.slow   # a numba compile (quick suite: the reference backend below)
def test_registered_name_matches_eager(rng):
    torch.manual_seed(0)
    m = MLP().eval()
    fast = torch.compile(m, backend="graphc")
    x = torch.from_numpy(rng.standard_normal((3, 5, 16)).astype(np.float32))
    with torch.no_grad():
        got, want = fast(x), m(x)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    assert rel(got, want) < 1e-5


def test_dynamic_new_sequence_does_not_recompile(rng):
    torch.manual_seed(0)
    m = MLP().eval()
    backend, calls = _counting(graphc.torch_backend(backend="reference", level="O2"))
    fast = torch.compile(m, backend=backend, dynamic=True)
    with torch.no_grad():
        for B, S in [(2, 5), (2, 9), (3, 17), (4, 2)]:
            x = torch.from_numpy(rng.standard_normal((B, S, 16)).astype(np.float32))
            assert rel(fast(x), m(x)) < 1e-5, (B, S)
    assert len(calls) == 1, calls


def test_graph_break_two_graphs(rng, capsys):
    torch.manual_seed(0)
    m = Broken().eval()
    backend, calls = _counting(graphc.torch_backend(backend="reference"))
    fast = torch.compile(m, backend=backend, dynamic=True)
    with torch.no_grad():
        for S in (4, 11):
            x = torch.from_numpy(rng.standard_normal((2, S, 16)).astype(np.float32))
            assert rel(fast(x), m(x)) < 1e-5, S
    assert len(calls) == 2, calls
    assert "graph break" in capsys.readouterr().out


def test_needs_autograd_is_an_inference_only_error(rng):
    m = MLP()
    fast = torch.compile(m, backend=graphc.torch_backend(backend="reference"))
    x = torch.from_numpy(rng.standard_normal((2, 3, 16)).astype(np.float32))
    with pytest.raises(Exception, match="inference only") as e:
        fast(x)                       # parameters require grad, grad mode on
    err = e.value
    while err is not None and not isinstance(err, InferenceOnlyError):
        err = getattr(err, "inner_exception", None) or err.__cause__   # dynamo wraps it
    assert isinstance(err, InferenceOnlyError)
    assert "torch.no_grad()" in str(err)


def test_outputs_share_memory_with_graphc_arrays(rng):
    """The tensors handed back are torch.from_numpy views of graphc's output arrays."""
    from graphc.frontend.torch.dynamo import Runner

    class Exe:
        def __call__(self, *arrays):
            self.seen = arrays
            self.out = arrays[0] * 2
            return self.out
    exe = Exe()
    x = torch.from_numpy(rng.standard_normal((2, 3)).astype(np.float32))
    (y,) = Runner(exe, [False, True])(3, x)
    assert np.shares_memory(exe.seen[0], x.numpy())
    assert np.shares_memory(y.numpy(), exe.out)
