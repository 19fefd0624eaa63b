"""Importing a kernel module from its file in the kernel cache (cache.py), and Numba's
machine-code cache for those modules, shared with the compile workers of
``cache.precompile``, which run this file as a script (so a worker starts without
importing graphc; it is given the path of graphc/cache.py, which holds the sealing, see
there): each reads module paths from stdin, imports (compiles) each, and prints ``DONE``
+ the path.

Nothing Python or Numba would read on its own is trusted:

* a module is executed from the bytes graphc checked (compiled with ``compile``, not
  imported through Python's import system, which would also write and later load a
  ``.pyc``);
* Numba's index (``.nbi``) and machine code (``.nbc``) of graphc's modules are sealed
  when written and checked before they are unpickled: :func:`install_numba_hook`
  replaces ``numba.core.caching.IndexDataCacheFile`` by a subclass that does that for
  the cache folders graphc registered (other code's Numba caches are left as they are),
  and puts a locator first that keeps graphc's machine code in the ``__pycache__``
  beside its modules whatever ``NUMBA_CACHE_DIR`` says.
"""
import hashlib
import importlib.util
import io
import os
import pickle
import re
import sys
import threading
import types

DONE = "graphc-compiled "
HEADER = "# graphc-sha256: "

_trust = None                  # graphc/cache.py: graphc.cache, or loaded from its path
_SEALED_DIRS: set[str] = set()  # realpaths of the __pycache__ folders graphc seals
_hook_lock = threading.Lock()
_hooked = False
_STEM = re.compile(r"(?:^|-)(k_[0-9a-f]{32})\.")
_MODULE_STEMS: set[str] = set()   # k_<digest> of the modules graphc executed


def trust():
    global _trust
    if _trust is None:
        from graphc import cache
        _trust = cache
    return _trust


def register_folder(folder) -> None:
    """Seal and check Numba's cache files in ``folder/__pycache__`` (graphc's kernel
    folder, already checked by graphc.cache.private_dir)."""
    _SEALED_DIRS.add(os.path.realpath(os.path.join(str(folder), "__pycache__")))


def check_module(path, data: bytes) -> bool:
    """Whether ``data`` (the bytes read from ``path``) is a module graphc wrote: sealed
    with the key, and holding the source whose digest names the file."""
    payload = trust().unseal(os.path.basename(str(path)), data)
    if payload is None:
        return False
    first, _, rest = payload.partition(b"\n")
    h = hashlib.sha256(rest).hexdigest()
    return (first == (HEADER + h).encode()
            and os.path.basename(str(path)) == f"k_{h[:32]}.py")


def import_file(name: str, path, code: bytes):
    """Execute ``code`` (the checked bytes of the module file ``path``) as module ``name``
    (registered in ``sys.modules`` before it runs; its functions' code names ``path``, so
    Numba's ``cache=True`` finds the file)."""
    path = os.path.abspath(str(path))
    install_numba_hook()
    register_folder(os.path.dirname(path))
    _MODULE_STEMS.add(os.path.basename(path)[:-3])
    mod = types.ModuleType(name)
    mod.__file__ = path
    mod.__spec__ = importlib.util.spec_from_loader(name, None, origin=path)
    sys.modules[name] = mod
    try:
        exec(compile(code, path, "exec", dont_inherit=True), mod.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def module_name(path) -> str:
    return "graphc_kernels." + os.path.basename(str(path))[:-3]


# ---- Numba's cache files, sealed -------------------------------------------------------------

def _sealed_path(cache_path: str, filename_base: str) -> bool:
    if os.path.realpath(cache_path) in _SEALED_DIRS:
        return True
    m = _STEM.search(filename_base)
    return m is not None and m.group(1) in _MODULE_STEMS


def install_numba_hook() -> None:
    """Seal Numba's cache files of graphc's modules (see the module docstring); once."""
    global _hooked
    if _hooked:
        return
    with _hook_lock:
        if _hooked:
            return
        from numba.core import caching

        base = caching.IndexDataCacheFile

        class SealedIndexDataCacheFile(base):
            """Numba's index and data files, sealed by graphc for its own modules."""

            def __init__(self, cache_path, filename_base, source_stamp):
                super().__init__(cache_path, filename_base, source_stamp)
                self._graphc_sealed = _sealed_path(cache_path, filename_base)

            def _load_index(self):
                if not self._graphc_sealed:
                    return super()._load_index()
                payload = trust().read_sealed(self._index_path, "Numba index")
                if payload is None:
                    return {}
                f = io.BytesIO(payload)
                if pickle.load(f) != self._version:
                    return {}
                stamp, overloads = pickle.loads(f.read())
                return overloads if stamp == self._source_stamp else {}

            def _save_index(self, overloads):
                if not self._graphc_sealed:
                    return super()._save_index(overloads)
                data = self._dump((self._source_stamp, overloads))
                trust().write_sealed(self._index_path,
                                     pickle.dumps(self._version, protocol=-1) + data)

            def _load_data(self, name):
                if not self._graphc_sealed:
                    return super()._load_data(name)
                path = self._data_path(name)
                payload = trust().read_sealed(path, "Numba machine code")
                if payload is None:      # load() takes an OSError for "not cached"
                    raise FileNotFoundError(path)
                return pickle.loads(payload)

            def _save_data(self, name, data):
                if not self._graphc_sealed:
                    return super()._save_data(name, data)
                trust().write_sealed(self._data_path(name), self._dump(data))

        class GraphcCacheLocator(caching.InTreeCacheLocator):
            """graphc's modules: machine code in the (checked) __pycache__ beside them."""

            @classmethod
            def from_function(cls, py_func, py_file):
                folder = os.path.dirname(os.path.realpath(py_file))
                if os.path.join(folder, "__pycache__") not in _SEALED_DIRS:
                    return None
                return super().from_function(py_func, py_file)

        caching.IndexDataCacheFile = SealedIndexDataCacheFile
        if not any(c.__name__ == "GraphcCacheLocator" for c in caching.CacheImpl._locator_classes):
            caching.CacheImpl._locator_classes.insert(0, GraphcCacheLocator)
        _hooked = True


# ---- the worker --------------------------------------------------------------------------

def serve() -> None:
    for line in sys.stdin:
        path = line.strip()
        try:
            data = trust().read_bytes(path)
            if check_module(path, data):     # else the backend's own load rebuilds it
                import_file(module_name(path), path, data)
        except Exception:
            pass          # the backend's own load of this module raises the error
        print(DONE + path, flush=True)


def _load_trust(path: str):
    spec = importlib.util.spec_from_file_location("graphc_cache_for_worker", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":
    # Run as a script, this file's folder is sys.path[0]: a module there named like one
    # of the standard library's would shadow it.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    _trust = _load_trust(sys.argv[1])     # graphc/cache.py, from the parent
    serve()
