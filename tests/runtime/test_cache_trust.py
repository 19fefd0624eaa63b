"""The kernel cache is trusted only after checking (graphc/cache.py).

Every file a small graph leaves in the cache (kernel source, Numba's index and machine
code, the emulator's shared library) is tampered with in each way below; a new process
then compiles and runs the graph on numba and cupy-emu: the answers are right, the code
planted never runs (its marker file is never created), exactly one warning names each
tampered file, and each file is rebuilt, sealed again. A cache directory others can write
to, and a key file others can read, are refused.
"""
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numba
import pytest
from fifo import without_hanging

import graphc
from graphc import cache as trust
from graphc.backends.numba_cpu import kernel_import

MARKER_ENV = "GRAPHC_TEST_MARKER"

SCRIPT = textwrap.dedent("""
    import json, warnings
    import numpy as np
    import graphc
    from graphc import spec

    def f(x):
        return graphc.softmax(x * 3.0, axis=-1), graphc.topk(graphc.exp(x), 2)[0]
    g = graphc.trace(f, spec(("S", 8)))
    x = np.linspace(-2, 2, 40, dtype=np.float32).reshape(5, 8)
    ref = graphc.compile(g, backend="reference", float64=True)(x)
    errs = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for backend in ("numba", "cupy-emu"):
            exe = graphc.compile(g, backend=backend)
            errs[backend] = max(float(np.abs(a - r).max()) for a, r in zip(exe(x), ref))
    print(json.dumps({"errs": errs, "warnings": [str(w.message) for w in caught]}))
""")

# Code that, if anything ran it, would create the marker file.
PLANTED_PY = (f"import os; open(os.environ[{MARKER_ENV!r}], 'w').close()\n")


class _Planted:
    def __reduce__(self):
        return exec, (PLANTED_PY,)


PLANTED_PICKLE = pickle.dumps(_Planted())

FOREIGN_SO = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void graphc_test_planted(void) {
  const char* path = getenv("GRAPHC_TEST_MARKER");
  if (path) { FILE* f = fopen(path, "w"); if (f) fclose(f); }
}
extern "C" const char graphc_emu_digest[] = "not a digest";
"""


def _env(root: Path, marker: Path) -> dict:
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(root / "cache"),
               GRAPHC_CACHE_KEY=str(root / "key" / "cache.key"), GRAPHC_COMPILE_JOBS="1")
    env[MARKER_ENV] = str(marker)
    env.pop("NUMBA_CACHE_DIR", None)
    return env


def run_graph(root: Path, marker: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=_env(root, marker),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cache_files(root: Path) -> dict[str, list[Path]]:
    files = sorted(p for p in (root / "cache").rglob("*") if p.is_file())
    kinds = {"py": [], "nbi": [], "nbc": [], "so": []}
    for p in files:
        kinds[p.suffix[1:]].append(p)   # anything else (a .pyc, a temp file): KeyError
    return kinds


@pytest.fixture(scope="module")
def foreign_so(tmp_path_factory):
    folder = tmp_path_factory.mktemp("foreign")
    src, out = folder / "planted.cpp", folder / "planted.so"
    src.write_text(FOREIGN_SO)
    cxx = os.environ.get("CXX") or "g++"
    try:
        proc = subprocess.run([*cxx.split(), "-shared", "-fPIC", str(src), "-o", str(out)],
                              capture_output=True, text=True)
    except OSError:
        pytest.skip("no C++ compiler (the emulator needs one)")
    assert proc.returncode == 0, proc.stderr
    # the control: loading it does run its constructor
    marker = folder / "control"
    subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(out)!r})"],
                   env=dict(os.environ, **{MARKER_ENV: str(marker)}), check=True)
    assert marker.exists()
    return out.read_bytes()


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """A first process fills an empty cache."""
    root = tmp_path_factory.mktemp("trust-cold")
    marker = root / "marker"
    result = run_graph(root, marker)
    assert not result["warnings"], result["warnings"]
    assert all(e < 1e-5 for e in result["errs"].values()), result["errs"]
    files = cache_files(root)
    # the files graphc and Numba will load, and nothing else (no .pyc)
    assert len(files["py"]) >= 3 and len(files["nbi"]) >= 3 and files["nbc"] and files["so"]
    key = root / "key" / "cache.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for folder in (root / "cache").rglob("*"):
        if folder.is_dir():
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    return root


def _truncate(data, other):
    return data[:len(data) // 2]


def _flip(data, other):
    b = bytearray(data)
    for k in range(1, 9):
        b[len(b) * k // 9] ^= 0xFF
    return bytes(b)


TAMPER = {
    "truncate": _truncate,
    "flip8": _flip,
    "python": lambda data, other: PLANTED_PY.encode(),
    "pickle": lambda data, other: PLANTED_PICKLE,
    "shared_library": None,                      # the foreign .so (fixture)
    "swapped": lambda data, other: other,        # another file graphc sealed
}


# The two that planted code which used to run (a pickle Numba unpickled, a library whose
# constructor ran before its digest was read) in the quick suite; the rest with -m slow.
QUICK = ("pickle", "shared_library")


@pytest.mark.parametrize("how", [h if h in QUICK else pytest.param(h, marks=pytest.mark.slow)
                                 for h in sorted(TAMPER)])
def test_tampered_cache_files_are_rebuilt(cold, foreign_so, tmp_path, monkeypatch, how):
    root = tmp_path / "run"
    shutil.copytree(cold, root)
    files = cache_files(root)
    # one file of each kind, of three different kernel modules (a bad source also drops
    # its module's machine code, which must not hide a second tampering)
    stems = sorted({p.name.split(".")[0] for p in files["nbi"]})
    py = next(p for p in files["py"] if p.stem == stems[0])
    nbi = next(p for p in files["nbi"] if p.name.startswith(stems[1] + "."))
    nbc = next(p for p in files["nbc"] if p.name.startswith(stems[2] + "."))
    so = files["so"][0]
    targets = [py, nbi, nbc, so]
    good_py = py.read_bytes()
    others = {py: files["py"][1] if files["py"][0] == py else files["py"][0],
              nbi: next(p for p in files["nbi"] if p != nbi),
              nbc: so, so: nbc}
    original = {p: p.read_bytes() for p in set(targets) | set(others.values())}
    for path in targets:
        data = original[path]
        bad = (foreign_so if how == "shared_library" else
               TAMPER[how](data, original[others[path]]))
        assert bad != data
        path.write_bytes(bad)
    marker = tmp_path / "marker"
    result = run_graph(root, marker)
    monkeypatch.setenv("GRAPHC_CACHE_KEY", str(root / "key" / "cache.key"))
    assert not marker.exists(), "code planted in the cache ran"
    assert all(e < 1e-5 for e in result["errs"].values()), result["errs"]
    ours = [w for w in result["warnings"] if w.startswith("graphc: cached")]
    assert len(ours) == len(result["warnings"]) == 4, result["warnings"]
    for path in targets:
        named = [w for w in ours if str(path) in w]
        assert len(named) == 1, (path.name, ours)
        assert "deleted it, rebuilding it" in named[0]
        # rebuilt and sealed again with the key
        data = path.read_bytes()
        assert trust.unseal(path.name, data) is not None, path
    assert py.read_bytes() == good_py
    assert set(cache_files(root)) == {"py", "nbi", "nbc", "so"}


@pytest.fixture
def keyed(tmp_path, monkeypatch):
    """This process using a key and a cache of the test's own."""
    monkeypatch.setenv("GRAPHC_CACHE_KEY", str(tmp_path / "key" / "cache.key"))
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_rebuilt_files_carry_the_seal(cold, keyed, monkeypatch):
    """Every file in the cache is sealed with the key of the process that wrote it (and
    only that key opens it), bound to its name."""
    monkeypatch.setenv("GRAPHC_CACHE_KEY", str(cold / "key" / "cache.key"))
    files = [p for ps in cache_files(cold).values() for p in ps]
    for p in files:
        assert trust.unseal(p.name, p.read_bytes()) is not None, p
    a, b = files[0], files[-1]
    assert trust.unseal(b.name, a.read_bytes()) is None      # bound to the name
    monkeypatch.setenv("GRAPHC_CACHE_KEY", str(keyed / "other.key"))
    assert trust.unseal(a.name, a.read_bytes()) is None      # and to the key


def test_seal(keyed):
    payload = b"\x00\xff some bytes \n" * 50
    sealed = trust.seal("k_x.nbc", payload)
    assert trust.unseal("k_x.nbc", sealed) == payload
    assert trust.unseal("k_y.nbc", sealed) is None
    assert trust.unseal("k_x.nbc", sealed[:-1]) is None
    assert trust.unseal("k_x.nbc", sealed[1:]) is None
    assert trust.unseal("k_x.nbc", b"") is None
    flipped = bytearray(sealed)
    flipped[3] ^= 1
    assert trust.unseal("k_x.nbc", bytes(flipped)) is None
    key = trust.key_path()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert len(key.read_text().strip()) == 64


def test_worker_runs_only_checked_modules(keyed):
    """A compile worker is given a path; it executes the file only if graphc sealed it and
    its content is the source its name is the digest of."""
    from graphc.backends.numba_cpu import cache
    h, path, text = cache._entry("x = 1\n")
    data = text.encode()
    assert kernel_import.check_module(path, data)
    assert not kernel_import.check_module(path, data.replace(b"x = 1", b"x = 2"))
    assert not kernel_import.check_module(path.with_name("k_" + "0" * 32 + ".py"), data)
    forged = data.split(trust.SEAL)[0].replace(b"x = 1", b"x = 2")
    assert not kernel_import.check_module(path, forged + trust.SEAL + b"0" * 64 + b"\n")


def test_cache_dir_writable_by_others_is_refused(keyed, monkeypatch):
    root = keyed / "shared"
    root.mkdir()
    os.chmod(root, 0o777)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(root))
    with pytest.raises(trust.CacheTrustError, match="writable by group and others") as e:
        trust.cache_subdir("numba-test")
    assert str(root) in str(e.value) and f"chmod go-w {root}" in str(e.value)
    assert isinstance(e.value, graphc.GraphcError)
    # through the numba backend: refused before anything is written or loaded
    from graphc.backends.numba_cpu import cache
    with pytest.raises(trust.CacheTrustError, match="chmod go-w"):
        cache.load_kernel("def kernel(x):\n    return x\n")
    assert list(root.rglob("*.py")) == []
    os.chmod(root, 0o700)                                  # fixed: accepted
    assert cache.load_kernel("def kernel(x):\n    return x + 1\n")[0](1) == 2

    # a group-writable folder inside the cache
    inner = keyed / "c2"
    (inner / "cuda-emu-x").mkdir(parents=True)
    os.chmod(inner, 0o700)
    os.chmod(inner / "cuda-emu-x", 0o770)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(inner))
    with pytest.raises(trust.CacheTrustError, match="writable by group"):
        trust.cache_subdir("cuda-emu-x")

    # a parent others can write to (not sticky): others could swap the cache folder
    parent = keyed / "open"
    parent.mkdir()
    os.chmod(parent, 0o757)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(parent / "cache"))
    with pytest.raises(trust.CacheTrustError, match=f"{parent} is writable by others"):
        trust.cache_subdir("numba-test")
    os.chmod(parent, 0o1777)                               # sticky, as /tmp: accepted
    assert trust.cache_subdir("numba-test").is_dir()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a folder to another user needs root")
def test_cache_dir_of_another_user_is_refused(keyed, monkeypatch):
    root = keyed / "theirs"
    root.mkdir()
    os.chown(root, 65534, -1)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(root))
    with pytest.raises(trust.CacheTrustError, match="owned by uid 65534"):
        trust.cache_subdir("numba-test")


def test_key_others_can_read_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    key = tmp_path / "k1" / "cache.key"
    key.parent.mkdir(mode=0o700)
    key.write_text("ab" * 32 + "\n")
    os.chmod(key, 0o640)
    monkeypatch.setenv("GRAPHC_CACHE_KEY", str(key))
    with pytest.raises(trust.CacheTrustError, match=f"chmod 600 {key}"):
        trust.cache_key()
    # in a folder others can write to: refused
    open_dir = tmp_path / "k0"
    open_dir.mkdir()
    os.chmod(open_dir, 0o770)
    monkeypatch.setenv("GRAPHC_CACHE_KEY", str(open_dir / "cache.key"))
    with pytest.raises(trust.CacheTrustError,
                       match=f"refusing the folder of the cache key {open_dir}: .* group"):
        trust.cache_key()
    assert not (open_dir / "cache.key").exists()
    # inside the cache: refused
    monkeypatch.setenv("GRAPHC_CACHE_KEY", str(tmp_path / "cache" / "cache.key"))
    with pytest.raises(trust.CacheTrustError, match="must not be inside the cache"):
        trust.cache_key()
    # not a key
    bad = tmp_path / "k2" / "cache.key"
    bad.parent.mkdir(mode=0o700)
    bad.write_text("hello\n")
    os.chmod(bad, 0o600)
    monkeypatch.setenv("GRAPHC_CACHE_KEY", str(bad))
    with pytest.raises(trust.CacheTrustError, match="not a graphc key"):
        trust.cache_key()
    # default place: outside the cache, in the config folder
    monkeypatch.delenv("GRAPHC_CACHE_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert trust.key_path() == tmp_path / "config" / "graphc" / "cache.key"
    trust.cache_key()
    assert stat.S_IMODE(trust.key_path().stat().st_mode) == 0o600
    # where the config folder cannot be made: beside the cache folder, not inside it
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "not-a-folder"))
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "c3"))
    trust.cache_key()
    assert stat.S_IMODE((tmp_path / ".c3.key").stat().st_mode) == 0o600


def test_numba_files_outside_graphc_are_left_alone():
    """The hook only seals graphc's own modules' Numba caches."""
    from numba.core import caching
    kernel_import.install_numba_hook()
    f = caching.IndexDataCacheFile("/nonexistent/__pycache__", "user_mod.f-3.py311", None)
    assert not f._graphc_sealed
    assert numba.__version__


def test_planted_payloads_are_live(tmp_path, monkeypatch):
    """The control: the planted source and pickle do create the marker when run."""
    for k, run in enumerate([lambda: exec(PLANTED_PY), lambda: pickle.loads(PLANTED_PICKLE)]):
        marker = tmp_path / f"marker{k}"
        monkeypatch.setenv(MARKER_ENV, str(marker))
        run()
        assert marker.exists()


def test_processes_creating_the_key_at_once_agree(tmp_path):
    """The key is created atomically: processes racing to create it all get the same one
    (graphc/cache.py loads without graphc, as the compile workers load it)."""
    code = textwrap.dedent(f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("c", {trust.__file__!r})
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        print(m.cache_key().hex())
    """)
    env = dict(os.environ, GRAPHC_CACHE_KEY=str(tmp_path / "k" / "cache.key"),
               GRAPHC_CACHE_DIR=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert (tmp_path / "k" / "cache.key").read_text().strip()
    assert [p.name for p in (tmp_path / "k").iterdir()] == ["cache.key"]   # no temp left


def test_files_of_an_earlier_graphc_are_replaced_quietly(keyed, monkeypatch):
    """A kernel file exactly as graphc wrote it before files were sealed is rewritten
    without a warning, and its module's Numba files are deleted unread."""
    import warnings
    from graphc.backends.numba_cpu import cache
    source = textwrap.dedent("""
        import numba as nb


        @nb.njit("int64(int64)", cache=True)
        def kernel(x):
            return x + 7
    """)
    h, path, text = cache._entry(source)
    path.write_bytes(cache._unsealed(h, source))
    index = path.parent / "__pycache__" / f"{path.stem}.kernel-5.py311.nbi"
    index.write_bytes(PLANTED_PICKLE)
    marker = keyed / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn, cached = cache.load_kernel(source)
    assert fn(1) == 8 and not cached and not marker.exists()
    assert path.read_text() == text and not index.exists()


def test_temporaries_left_by_killed_writers_are_swept(keyed):
    """A writer killed between its temporary file and the rename (write_atomic) or while
    the emulator loads its private copy (.load-*.so) leaves the file behind; the first
    process to use the folder after an hour deletes it. A fresh one (a writer at work) and
    every other file are left alone."""
    folder = keyed / "cache" / "numba-test"
    folder.mkdir(parents=True, mode=0o700)
    (keyed / "cache").chmod(0o700)
    old = time.time() - 2 * 3600
    stale = [folder / ".k_0123.py.ab12cd34.tmp", folder / ".load-ab12cd34.so"]
    fresh = folder / ".k_4567.py.ef56gh78.tmp"
    kept = [folder / "k_89ab.py", folder / "m_89ab.so", folder / "notes.tmp", fresh]
    for p in stale + kept:
        p.write_bytes(b"x")
    for p in stale + kept[:-1]:
        os.utime(p, (old, old))
    assert trust.cache_subdir("numba-test") == folder
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_in_the_cache_is_replaced_not_read(keyed, monkeypatch):
    """A FIFO where a cache file (or the key) should be would block the open forever:
    graphc opens without blocking, finds it is no regular file, deletes it and rebuilds
    (the key: refuses it with a CacheTrustError)."""
    import warnings
    from graphc.backends.numba_cpu import cache
    source = "import numba as nb\n\n\n@nb.njit(cache=True)\ndef kernel(x):\n    return x + 3\n"
    h, path, text = cache._entry(source)           # (creates the key and the folder)
    os.mkfifo(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = without_hanging(lambda: cache.load_kernel(source), path,
                              "loading a kernel whose cache file is a FIFO hung")
    assert "error" not in out, out.get("error")
    fn, cached = out["value"]
    assert fn(1) == 4 and not cached and path.read_text() == text
    assert [str(w.message) for w in caught if str(path) in str(w.message)]

    other = path.with_name("k_" + "1" * 32 + ".nbi")
    os.mkfifo(other)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = without_hanging(lambda: trust.read_sealed(other, "Numba index"), other)
    assert out == {"value": None} and not other.exists()
    assert len(caught) == 1 and str(other) in str(caught[0].message)

    key = keyed / "fifo-key" / "cache.key"
    key.parent.mkdir(mode=0o700)
    os.mkfifo(key, 0o600)
    monkeypatch.setenv("GRAPHC_CACHE_KEY", str(key))
    out = without_hanging(trust.cache_key, key, "reading a cache key that is a FIFO hung")
    assert isinstance(out.get("error"), trust.CacheTrustError), out
    assert "not a file of yours" in str(out["error"])


def test_a_cache_directory_that_cannot_be_made_is_a_clear_error(keyed, monkeypatch):
    """A cache path through a file, or one the system will not create, is a CacheDirError
    naming the path and the fix (was: a raw FileNotFoundError, or a 'writable by others'
    refusal naming /dev/null)."""
    afile = keyed / "afile"
    afile.write_text("x")
    afile.chmod(0o666)                  # (what /dev/null is: no reason to blame its mode)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(afile / "cache"))
    with pytest.raises(trust.CacheDirError) as e:
        trust.cache_subdir("numba-test")
    msg = str(e.value)
    assert f"{afile} is not a directory" in msg and "GRAPHC_CACHE_DIR" in msg, msg

    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(keyed / "denied" / "cache"))

    def mkdir(path, mode=0o777):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(trust.os, "mkdir", mkdir)
    with pytest.raises(trust.CacheDirError) as e:
        trust.cache_subdir("numba-test")
    msg = str(e.value)
    assert "cannot create the cache directory" in msg and "Permission denied" in msg, msg
    assert str(keyed / "denied") in msg and "GRAPHC_CACHE_DIR" in msg
    assert isinstance(e.value, graphc.GraphcError)


def test_a_cache_write_that_fails_is_a_clear_error(keyed, monkeypatch):
    """A full disk (or any OSError) writing a cache file is a CacheDirError naming the
    file and the reason, and leaves no temporary file behind."""
    import errno
    folder = trust.cache_subdir("numba-test")
    trust.cache_key()                                  # made before the disk is "full"
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trust.os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    with pytest.raises(trust.CacheDirError) as e:
        trust.write_sealed(folder / "k_x.nbi", b"payload")
    msg = str(e.value)
    assert f"cannot write the cache file {folder / 'k_x.nbi'}" in msg, msg
    assert "No space left on device" in msg and "GRAPHC_CACHE_DIR" in msg
    assert list(folder.iterdir()) == []
