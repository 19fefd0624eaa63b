"""Issue 18 part 3: no raw exception reaches a user at call time.

Read-only, non-writeable and memory-mapped inputs (and weights) run on every backend; a
call that would not fit in memory is an InputError naming the node, the shapes and the
bytes, raised before any work.
"""
import numpy as np
import pytest

import graphc
from graphc.errors import InputError
from graphc.runtime import memory

BACKENDS = ["reference", "numba", "cupy-emu"]

rng = np.random.default_rng(0)
W = rng.standard_normal((16, 16)).astype(np.float32) / 4
TABLE = rng.standard_normal((10, 16)).astype(np.float32)


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def block(ids, x):
    h = graphc.embedding(TABLE, ids) + x          # a kernel reads both inputs directly
    return graphc.softmax(graphc.relu(h @ W) * 2.0, axis=-1)


def _expected(ids, x):
    h = TABLE[ids] + x
    z = np.maximum(h @ W, 0) * 2
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def graph():
    return graphc.trace(block, graphc.spec(("S",), "int64"), graphc.spec(("S", 16)))


@pytest.fixture(scope="module")
def exes(graph):
    return {b: graphc.compile(graph, backend=b) for b in BACKENDS}


def _memmap(tmp_path, a, mode):
    f = tmp_path / f"a{a.dtype}{mode}.bin"
    m = np.memmap(f, dtype=a.dtype, mode="w+", shape=a.shape)
    m[...] = a
    m.flush()
    del m
    return np.memmap(f, dtype=a.dtype, mode=mode, shape=a.shape)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["readonly", "memmap-r", "memmap-r+", "broadcast"])
def test_readonly_and_mapped_inputs(exes, backend, kind, tmp_path):
    ids = np.array([1, 2, 3, 9, 0], np.int64)
    x = rng.standard_normal((5, 16)).astype(np.float32)
    if kind == "readonly":
        a, b = _readonly(ids), _readonly(x)
    elif kind == "broadcast":          # a read-only view with a 0 stride
        a, b = ids, np.broadcast_to(x[:1], (5, 16))
        x = np.array(b)
    else:
        mode = kind.split("-")[1]
        a, b = _memmap(tmp_path, ids, mode), _memmap(tmp_path, x, mode)
    y = exes[backend](a, b)
    np.testing.assert_allclose(y, _expected(ids, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["numba", "cupy-emu"])
def test_readonly_weights(backend):
    w = _readonly(W)
    table = _readonly(TABLE)

    def f(ids, x):
        return graphc.relu((graphc.embedding(table, ids) + x) @ w + w[0])
    g = graphc.trace(f, graphc.spec(("S",), "int64"), graphc.spec(("S", 16)))
    ids, x = np.array([4, 5], np.int64), rng.standard_normal((2, 16)).astype(np.float32)
    y = graphc.compile(g, backend=backend)(_readonly(ids), x)
    np.testing.assert_allclose(y, np.maximum((TABLE[ids] + x) @ W + W[0], 0), rtol=1e-5,
                               atol=1e-6)


def _attention_graph():
    def attn(x):                                  # x: [S, 16]
        s = graphc.softmax(graphc.scale(x @ x.T, 0.25), axis=-1)
        return s @ x
    return graphc.trace(attn, graphc.spec(("S", 16)))


@pytest.mark.parametrize("float64", [False, True])
def test_reference_too_large_is_an_input_error_before_any_work(monkeypatch, float64):
    g = _attention_graph()
    exe = graphc.compile(g, backend="reference", level="O0", float64=float64)
    monkeypatch.setenv("GRAPHC_MEMORY_LIMIT", "1M")
    ran = []
    import graphc.runtime.interpreter as interp
    x = np.zeros((1000, 16), np.float32)          # scores [1000, 1000]: 4 MB (8 in f64)
    with monkeypatch.context() as m, pytest.raises(InputError) as e:
        m.setattr(interp, "get_op", lambda *a, **k: ran.append(a) or None)
        exe(x)
    msg = str(e.value)
    assert not ran                                  # refused before any node ran
    assert "needs about" in msg and "only 1.0 MiB" in msg and "{'S': 1000}" in msg
    assert "f32[S,S] = [1000, 1000]" in msg and "bytes" in msg
    assert ("float64" in msg) == float64
    assert "test_call_robustness.py" in msg         # the user's line of the big node
    # small sizes still run
    assert exe(np.zeros((4, 16), np.float32)).shape == (4, 16)


@pytest.mark.parametrize("backend", ["numba", "cupy-emu"])
def test_compiled_too_large_is_an_input_error(monkeypatch, backend):
    def mlp(x):
        return graphc.relu(x @ W) @ W.T
    g = graphc.trace(mlp, graphc.spec(("S", 16)))
    exe = graphc.compile(g, backend=backend)
    assert exe(np.ones((3, 16), np.float32)).shape == (3, 16)
    monkeypatch.setenv("GRAPHC_MEMORY_LIMIT", "100K")
    with pytest.raises(InputError) as e:
        exe(np.ones((4000, 16), np.float32))       # 256 KB a tensor
    msg = str(e.value)
    assert "needs about" in msg and "{'S': 4000}" in msg and "[4000, 16]" in msg
    assert "100.0 KiB" in msg


def test_available_bytes_parses_the_override(monkeypatch):
    monkeypatch.setenv("GRAPHC_MEMORY_LIMIT", "2G")
    assert memory.available_bytes() == 2 << 30
    monkeypatch.setenv("GRAPHC_MEMORY_LIMIT", "12345")
    assert memory.available_bytes() == 12345
    monkeypatch.delenv("GRAPHC_MEMORY_LIMIT")
    assert memory.available_bytes() is None or memory.available_bytes() > 0


@pytest.mark.parametrize("bad", ["abc", "-5", "-1G", "1e400", "inf", "nan", "G", "12Q"])
def test_a_memory_limit_that_is_no_byte_count_is_an_error(monkeypatch, bad):
    """A GRAPHC_MEMORY_LIMIT that is not a byte count is an InputError naming it (was:
    ignored silently, 'only -5 B is available', or a raw OverflowError)."""
    monkeypatch.setenv("GRAPHC_MEMORY_LIMIT", bad)
    with pytest.raises(InputError) as e:
        memory.available_bytes()
    assert f"GRAPHC_MEMORY_LIMIT must be a byte count such as 8G, 512M or 1000000, got " \
        f"{bad!r}" in str(e.value)
    exe = graphc.compile(graphc.trace(lambda x: x * 2.0, graphc.spec(("S",))),
                         backend="reference")
    with pytest.raises(InputError, match="GRAPHC_MEMORY_LIMIT"):
        exe(np.ones(3, np.float32))


@pytest.mark.parametrize("text, n", [("8G", 8 << 30), ("512M", 512 << 20), ("1.5KiB", 1536),
                                     ("1000000", 10 ** 6), (" 2gb ", 2 << 30), ("0", 0)])
def test_memory_limit_forms(monkeypatch, text, n):
    monkeypatch.setenv("GRAPHC_MEMORY_LIMIT", text)
    assert memory.available_bytes() == n


def test_interpreter_out_of_memory_names_the_node(monkeypatch):
    """A MemoryError NumPy raises anyway (the estimate is below the truth) is an
    InputError naming the node."""
    g = _attention_graph()
    import graphc.runtime.interpreter as interp
    real = interp.get_op

    class Boom:
        extra = {}

        @staticmethod
        def reference(*a, **k):
            raise MemoryError

    monkeypatch.setattr(interp, "get_op", lambda name, loc=None: Boom if name == "softmax"
                        else real(name, loc))
    with pytest.raises(InputError) as e:
        graphc.compile(g, backend="reference", level="O0")(np.zeros((8, 16), np.float32))
    assert "out of memory computing softmax" in str(e.value) and "[8, 8]" in str(e.value)


def test_reference_attention_op_counts_its_scores(monkeypatch):
    """At O2 the reference runs the fused attention op, whose NumPy implementation holds
    the [S, T] scores: they count."""
    exe = graphc.compile(_attention_graph(), backend="reference")
    monkeypatch.setenv("GRAPHC_MEMORY_LIMIT", "1M")
    with pytest.raises(InputError) as e:
        exe(np.zeros((1000, 16), np.float32))
    assert "needs about" in str(e.value) and "fused" in str(e.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_id_out_of_range_names_the_users_line(exes, backend):
    x = np.zeros((2, 16), np.float32)
    with pytest.raises(InputError) as e:
        exes[backend](np.array([1, 10], np.int64), x)
    msg = str(e.value)
    assert "id 10 is out of range for a table of 10 rows" in msg
    assert "op 'embedding'" in msg
    line = block.__code__.co_firstlineno + 1          # h = graphc.embedding(...)
    assert f"test_call_robustness.py:{line}" in msg, msg


def test_compiled_out_of_memory_is_an_input_error(monkeypatch):
    def mlp(x):
        return graphc.relu(x @ W)
    exe = graphc.compile(graphc.trace(mlp, graphc.spec(("S", 16))), backend="numba")

    def boom(*a, **k):
        raise MemoryError
    monkeypatch.setattr(exe, "matmul", boom)
    monkeypatch.setattr(exe, "kernel", boom)
    with pytest.raises(InputError) as e:
        exe(np.ones((3, 16), np.float32))
    assert "ran out of memory: this call needs about" in str(e.value)
    assert "[3, 16]" in str(e.value)


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_memory_mapped_weights(tmp_path, mode):
    """Weights from np.load(mmap_mode=...): the GEMMs read them as given (BLAS, and the
    one-row GEMM kernels of a decode step), a kernel reads a copy."""
    f = tmp_path / "w.npy"
    np.save(f, W)
    w = np.load(f, mmap_mode=mode)

    def f1(x):                                    # x: [B, S, 16]
        return graphc.relu(x @ w) + x * w[0]
    exe = graphc.compile(graphc.trace(f1, graphc.spec(("B", "S", 16))), backend="numba")
    for S in (1, 3):                              # S = 1: the one-row GEMM kernels
        x = rng.standard_normal((2, S, 16)).astype(np.float32)
        np.testing.assert_allclose(exe(x), np.maximum(x @ W, 0) + x * W[0], rtol=1e-5,
                                   atol=1e-5)


def test_a_cgroup_limit_caps_what_is_available(monkeypatch, tmp_path):
    import builtins
    real_open = builtins.open
    files = {"/sys/fs/cgroup/memory.max": "1073741824\n",
             "/sys/fs/cgroup/memory.current": "73741824\n"}

    def fake_open(path, *a, **k):
        if str(path) in files:
            p = tmp_path / str(path).replace("/", "_")
            p.write_text(files[str(path)])
            return real_open(p, *a, **k)
        return real_open(path, *a, **k)
    monkeypatch.delenv("GRAPHC_MEMORY_LIMIT", raising=False)
    monkeypatch.setattr(builtins, "open", fake_open)
    assert memory._cgroup_room() == 1_000_000_000
    assert memory.available_bytes() <= 1_000_000_000
    files["/sys/fs/cgroup/memory.max"] = "max\n"
    assert memory._cgroup_room() is None


@pytest.mark.parametrize("backend", ["reference", "numba", "cupy-emu"])
def test_zero_d_outputs_keep_their_shape(backend):
    """A 0-d constant or reduction returned as a graph output is 0-d on every backend
    (np.ascontiguousarray would make it [1])."""
    c = np.array(3.5, np.float32)
    g = graphc.trace(lambda x: (graphc.sum(x), graphc.constant(c), x * 2.0), graphc.spec((4,)))
    x = np.random.default_rng(0).standard_normal(4).astype(np.float32)
    s, k, y = graphc.compile(g, backend=backend)(x)
    assert np.shape(s) == () and np.shape(k) == () and y.shape == (4,)
    assert float(k) == 3.5 and abs(float(s) - float(x.astype(np.float64).sum())) < 1e-5
