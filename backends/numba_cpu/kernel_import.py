"""Importing a kernel module from its file in the kernel cache (cache.py), shared with the
compile workers of ``cache.precompile``, which run this file as a script (so a worker
starts without importing graphc): each reads module paths from stdin, imports (compiles)
each, and prints ``DONE`` + the path."""
import importlib.util
import os
import sys

DONE = "graphc-compiled "


def import_file(name: str, path):
    """Import the module at ``path`` as ``name`` (registered in ``sys.modules`` before it
    runs, so Numba's ``cache=True`` finds its file)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def module_name(path) -> str:
    return "graphc_kernels." + os.path.basename(str(path))[:-3]


def serve() -> None:
    for line in sys.stdin:
        path = line.strip()
        try:
            import_file(module_name(path), path)
        except Exception:
            pass          # the backend's own load of this module raises the error
        print(DONE + path, flush=True)


if __name__ == "__main__":
    # Run as a script, this file's folder is sys.path[0]: a module there named like one
    # of the standard library's would shadow it.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    serve()
