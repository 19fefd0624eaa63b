"""The content-addressed kernel cache: a second process starts warm, a corrupt or
tampered kernel file is detected and recompiled (never executed), and GRAPHC_CACHE_DIR
decides where everything goes."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest

import graphc
from graphc import spec
from graphc.backends.numba_cpu import cache

# Compiles a small causal Transformer in a fresh process and reports timings, the error
# against the float64 reference and the RuntimeWarnings raised while compiling.
SCRIPT = textwrap.dedent("""
    import json, time, warnings
    import numpy as np
    import graphc
    from graphc.models import transformer

    cfg = transformer.TransformerConfig(vocab_size=61, d_model=32, n_heads=2, d_ff=48,
                                        n_layers=2, max_len=64, causal=True)
    g = transformer.random(cfg, seed=3).trace()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        exe = graphc.compile(g, backend="numba")
        seconds = time.perf_counter() - t0
    ids = np.arange(11) % 61
    out = exe(ids)
    ref = graphc.compile(g, backend="reference", float64=True)(ids)
    print(json.dumps({
        "seconds": seconds, "kernel_seconds": exe.compile_seconds,
        "err": float(np.linalg.norm(out - ref) / np.linalg.norm(ref)),
        "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning]}))
""")


def run_compile(cache_root: Path) -> dict:
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache_root))
    env.pop("NUMBA_CACHE_DIR", None)   # Numba's machine code goes beside the kernel files
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file()}


def kernel_dir(root: Path) -> Path:
    return root / f"numba-{graphc.__version__}-{numba.__version__}"


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """A first process compiles into an empty cache."""
    root = tmp_path_factory.mktemp("cache-cold")
    result = run_compile(root)
    return root, result


def test_second_process_is_warm(cold, tmp_path):
    root, first = cold
    folder = kernel_dir(root)
    kernels = sorted(folder.glob("k_*.py"))
    assert kernels and not first["warnings"] and first["err"] < 1e-5
    # Numba stored machine code beside the kernel files (so a new process loads it).
    assert list((folder / "__pycache__").glob("k_*.nbi"))
    before = snapshot(folder)
    second = run_compile(root)
    print(f"\ncompile of the model: cold process {first['seconds']:.2f} s, "
          f"warm process {second['seconds']:.2f} s")
    assert not second["warnings"] and second["err"] < 1e-5
    assert snapshot(folder) == before, "a warm process rewrote or added cache files"
    assert second["seconds"] < 0.5 * first["seconds"]


def _corrupt_append(text: str) -> str:
    return text + "\nraise RuntimeError('garbage appended to a cached kernel')\n"


def _corrupt_byte(text: str) -> str:
    """Change one byte of the code so that it would compute something else if it ran."""
    head, sep, body = text.partition("def kernel(")
    assert " + " in body or " * " in body
    op = " + " if " + " in body else " * "
    return head + sep + body.replace(op, " - ", 1)


@pytest.mark.parametrize("corrupt", [pytest.param(_corrupt_append, marks=pytest.mark.slow),
                                     _corrupt_byte], ids=["appended", "byte_changed"])
def test_corrupt_kernel_file_is_recompiled(cold, tmp_path, corrupt):
    root, _ = cold
    copy = tmp_path / "cache"
    import shutil
    shutil.copytree(root, copy)
    folder = kernel_dir(copy)
    # The kernel with the most arithmetic (a layernorm or an epilogue).
    target = max(folder.glob("k_*.py"), key=lambda p: p.read_text().count(" + "))
    good = target.read_text()
    target.write_text(corrupt(good))
    result = run_compile(copy)
    assert any("does not match its hash" in w and target.name in w
               for w in result["warnings"]), result["warnings"]
    assert result["err"] < 1e-5
    assert target.read_text() == good   # rewritten from the source graphc generated
    assert list((folder / "__pycache__").glob(f"{target.stem}.*.nbi"))


def test_corrupt_file_detected_in_process(tmp_path, monkeypatch):
    """load_kernel checks the hash of a file it finds and rewrites a bad one."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    source = textwrap.dedent("""
        import numba as nb


        @nb.njit("int64(int64)", cache=True)
        def kernel(x):
            return x + 41
    """)
    fn, cached = cache.load_kernel(source)
    assert fn(1) == 42 and not cached
    (path,) = kernel_dir(tmp_path).glob("k_*.py")
    good = path.read_text()
    fn2, cached = cache.load_kernel(source)
    assert cached and fn2(1) == 42
    path.write_text(good.replace("x + 41", "x + 40"))
    with pytest.warns(RuntimeWarning, match="does not match its hash"):
        fn3, cached = cache.load_kernel(source)
    assert not cached and fn3(1) == 42
    assert path.read_text() == good


def test_cache_dir_is_honored(tmp_path, monkeypatch, rng):
    """Kernels go under $GRAPHC_CACHE_DIR/numba-<graphc>-<numba>/, nowhere else; without
    it, under $XDG_CACHE_HOME/graphc."""
    target = tmp_path / "here"
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(target))
    assert cache.cache_dir() == kernel_dir(target)
    g = graphc.trace(lambda x: graphc.exp(x) * 0.75 - 0.125, spec(("S", 4)))
    exe = graphc.compile(g, backend="numba")
    x = rng.standard_normal((3, 4)).astype(np.float32)
    want = np.exp(x.astype(np.float64)) * 0.75 - 0.125   # float64: no per-element
    assert np.linalg.norm(exe(x) - want) / np.linalg.norm(want) < 1e-6   # cancellation noise
    written = {p.name for p in kernel_dir(target).glob("k_*.py")}
    assert written and all(f"k_{cache.digest(src)[:32]}.py" in written
                           for src in exe.sources.values())
    monkeypatch.delenv("GRAPHC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "graphc" / kernel_dir(Path("")).name


def _adder(k: int) -> str:
    return textwrap.dedent(f"""
        import numba as nb


        @nb.njit("int64(int64)", cache=True)
        def kernel(x):
            return x + {k}
    """)


def test_precompile_in_worker_processes(tmp_path, monkeypatch):
    """Modules not in the cache are compiled by worker processes: their machine code is
    in Numba's disk cache before this process loads them, and the loads then hit the
    cache; a module already there, or fewer than PARALLEL_MIN_MODULES, stay here."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    sources = [_adder(k) for k in range(4)]
    done = []
    compiled = cache.precompile(sources + sources[:1], done=lambda: done.append(1))
    assert compiled == {cache.digest(s) for s in sources} and len(done) == 4
    folder = kernel_dir(tmp_path)
    for s in sources:
        stem = f"k_{cache.digest(s)[:32]}"
        assert (folder / f"{stem}.py").exists()
        assert list((folder / "__pycache__").glob(f"{stem}.*.nbi")), stem
    for k, s in enumerate(sources):
        fn, cached = cache.load_kernel(s)
        assert cached and fn(1) == 1 + k
    assert cache.precompile(sources) == set()                # all cached now
    assert cache.precompile([_adder(10), _adder(11)]) == set()   # too few to be worth it
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "1")
    assert cache.precompile([_adder(k) for k in range(20, 25)]) == set()


def test_precompile_failure_is_raised_by_the_load(tmp_path, monkeypatch):
    """A module that does not compile in a worker: precompile returns, and the load
    here raises the compiler's error (nothing is lost, nothing hangs)."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    bad = _adder(1).replace("x + 1", "x + undefined_name")
    sources = [bad, _adder(2), _adder(3)]
    assert cache.precompile(sources) == {cache.digest(s) for s in sources}
    assert cache.load_kernel(sources[1])[0](1) == 3
    with pytest.raises(Exception, match="undefined_name"):
        cache.load_kernel(bad)


def test_compile_jobs_setting(monkeypatch):
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "3")
    assert cache.compile_jobs() == 3
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "many")
    with pytest.raises(graphc.GraphcError, match="GRAPHC_COMPILE_JOBS must be an integer"):
        cache.compile_jobs()
    monkeypatch.delenv("GRAPHC_COMPILE_JOBS")
    assert 1 <= cache.compile_jobs() <= 8


def test_backend_precompiles_every_module(tmp_path, monkeypatch, rng):
    """graphc.compile hands every module it will load (kernels, attention softmax,
    library ops) to precompile first; in a fresh cache the workers compile them all."""
    import graphc.backends.numba_cpu as nbk
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    calls = []

    def spy(modules, done=None):
        got = cache.precompile(modules, done)
        calls.append((list(modules), got))
        return got
    monkeypatch.setattr(nbk, "precompile", spy)

    def f(q, k, v, x):
        a = graphc.ops.attention(q, k, v, scale=0.5, causal=True)
        return a, graphc.topk(graphc.softmax(x, axis=-1), 2)[0], graphc.relu(x) * 2.0 + 1.0
    g = graphc.trace(f, spec((2, "S", 8)), spec((2, "S", 8)), spec((2, "S", 8)),
                     spec(("S", 6)))
    exe = graphc.compile(g, backend="numba")
    (modules, compiled), = calls
    wanted = {cache.digest(s) for s in modules}
    assert {cache.digest(s) for s in exe.sources.values()} <= wanted
    assert len(wanted) >= len(exe.sources) + 2             # + softmax and topk modules
    assert compiled == wanted                               # all new: all in workers
    args = [rng.standard_normal((2, 9, 8)).astype(np.float32) for _ in range(3)]
    x = rng.standard_normal((9, 6)).astype(np.float32)
    ref = graphc.compile(g, backend="reference", float64=True)(*args, x)
    for got, want in zip(exe(*args, x), ref):
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5


@pytest.mark.slow       # a cold precompile of its own (test_backend_precompiles_every_module: quick)
def test_precompile_survives_noisy_workers_and_a_failing_callback(tmp_path, monkeypatch):
    """Modules that print while compiling do not count as done; a done() that raises
    does not hang the compile (the workers are told there is no more work); a module
    left by an interrupted compile (its file, no Numba index) is compiled again."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    noisy = [_adder(k) + "\nprint('compiled', 1)\nprint('graphc')\n" for k in range(4)]
    done = []
    assert len(cache.precompile(noisy, done=lambda: done.append(1))) == 4
    assert len(done) == 4

    def boom():
        raise RuntimeError("progress bar broke")
    sources = [_adder(k) for k in range(30, 34)]
    assert len(cache.precompile(sources, done=boom)) == 4          # returns, no hang
    for k, s in zip(range(30, 34), sources):
        assert cache.load_kernel(s)[0](0) == k
    # interrupted: the file is there, Numba's index is not
    half = _adder(40)
    h, path, text = cache._entry(half)
    path.write_text(text)
    assert cache.precompile([half, _adder(41), _adder(42)]) == {
        cache.digest(s) for s in (half, _adder(41), _adder(42))}


def test_precompile_without_processes_compiles_here(tmp_path, monkeypatch):
    """When worker processes cannot start, precompile gives up quietly and the loads
    compile in this process."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")

    def no_processes(*a, **k):
        raise PermissionError("no processes here")
    monkeypatch.setattr(cache.subprocess, "Popen", no_processes)
    sources = [_adder(k) for k in range(50, 54)]
    assert cache.precompile(sources) == set()
    for k, s in zip(range(50, 54), sources):
        fn, cached = cache.load_kernel(s)
        assert fn(0) == k


@pytest.mark.slow       # a cold precompile of its own
def test_compile_many_batches_the_kernels(tmp_path, monkeypatch, rng):
    """graphc.compile_many: the numba backend lowers each graph once and gets every
    graph's modules in one precompile call (one batch of workers), then each executable
    is the one graphc.compile would make; other backends just compile each; bad input is
    an error."""
    import graphc.backends.numba_cpu as nbk
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    calls, compiled = [], []
    real = nbk.precompile

    def spy(modules, done=None):
        calls.append(len(modules))
        compiled.append(real(modules, done))
        return compiled[-1]
    monkeypatch.setattr(nbk, "precompile", spy)
    planned = []
    real_plan = nbk._plan
    monkeypatch.setattr(nbk, "_plan", lambda g, fm: (planned.append(g), real_plan(g, fm))[1])
    g1 = graphc.trace(lambda x: graphc.softmax(x * 3.0, axis=-1), spec(("S", 8)))
    g2 = graphc.trace(lambda x: graphc.layernorm(graphc.relu(x) - 0.5,
                                                 np.ones(8, np.float32),
                                                 np.zeros(8, np.float32)), spec(("S", 8)))
    g3 = graphc.trace(lambda x: graphc.topk(graphc.exp(x), 2)[1], spec(("S", 8)))
    e1, e2, e3 = graphc.compile_many([g1, g2, g3], backend="numba")
    kernels = set(e1.sources.values()) | set(e2.sources.values()) | set(e3.sources.values())
    assert calls[0] == len(kernels) + 1                # + the topk library module
    assert len(compiled[0]) == calls[0] >= 3           # all new: the workers compiled them
    assert len(calls) == 1 and len(planned) == 3       # one batch, each graph lowered once
    x = rng.standard_normal((5, 8)).astype(np.float32)
    for g, e in ((g1, e1), (g2, e2)):
        want = graphc.compile(g, backend="reference", float64=True)(x)
        assert np.linalg.norm(e(x) - want) / np.linalg.norm(want) < 1e-6
    r1, r2 = graphc.compile_many([g1, g2])                     # reference: no batch hook
    assert np.allclose(r1(x), e1(x), atol=1e-6)
    with pytest.raises(graphc.TraceError, match="expects graphc.Graphs"):
        graphc.compile_many([g1, "not a graph"], backend="numba")
    with pytest.raises(graphc.BackendError, match="unknown options"):
        graphc.compile_many([g1, g2], backend="numba", tile=4)


def test_rows_static_and_dynamic_share_one_module(tmp_path, monkeypatch, rng):
    """One computation over a dynamic number of rows (a prefill's S) and a static one (a
    decode step's 1 row, or 3) renders to one module source (render.function_sizes: the
    split loop's extent is the runtime's range, not in the source), so a model's
    executables compile it once; each still computes its own rows."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    w = rng.standard_normal(16).astype(np.float32)

    def f(x):            # a row norm and a gated product: two kernels
        h = graphc.rmsnorm(x, w)
        return h * graphc.sigmoid(h) * x
    exes = [graphc.compile(graphc.trace(f, spec((n, 16))), backend="numba")
            for n in ("S", 1, 3)]
    srcs = [sorted(e.sources.values()) for e in exes]
    assert srcs[0] == srcs[1] == srcs[2] and len(srcs[0]) >= 1
    assert all("def kernel(" in s and ", S," not in s for s in srcs[0])
    for e, n in zip(exes, (7, 1, 3)):
        x = rng.standard_normal((n, 16)).astype(np.float32)
        xd = x.astype(np.float64)
        h = xd / np.sqrt((xd * xd).mean(-1, keepdims=True) + 1e-6) * w
        want = h / (1 + np.exp(-h)) * xd
        got = e(x)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5


def test_select_of_equal_branches_is_one_load():
    """``c ? x : x`` is x: a concat of one tensor broadcast over 16 heads (DeepSeek-V2's
    rope key beside each head's own) reads it once, not through 16 nested branches."""
    from graphc.lower import loopir as L
    from graphc.lower.indices import simplify_indices
    i, j = L.Var("i"), L.Var("j")
    load = L.Load("in1", (j,))
    value = load
    for h in range(15, 0, -1):
        value = L.Select(L.Bin("<", i, L.c(h)), load, value)
    value = L.Select(L.Bin("<", j, L.c(4)), L.Load("in0", (i, j)), value)
    k = L.Kernel("k_t", [L.BufferParam("in0", "float32", 2), L.BufferParam("in1", "float32", 1),
                         L.BufferParam("out", "float32", 2, "out")], [],
                 [L.Loop("i", L.c(16), [L.Loop("j", L.c(8), [
                     L.Store("out", (i, j), value)])], parallel=True)])
    text = L.format_kernel(simplify_indices(k))
    assert text.count("in1[") == 1 and text.count("?") == 1, text
