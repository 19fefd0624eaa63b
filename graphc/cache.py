"""Where graphc keeps compiled kernels, and why it may trust what it finds there.

The cache is ``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else
``~/.cache/graphc``; each backend uses a subfolder named for itself and the versions its
files depend on.

Trust. Every file graphc or Numba loads from the cache (kernel source, Numba's index and
machine code, the emulator's shared libraries) is *sealed* when graphc writes it: an
HMAC-SHA256 of its name and bytes, keyed with a per-user secret, is appended to the file
(one atomic write: a reader sees the old or the new file, each with its own seal). Before
anything reads or loads a file, its bytes are read once, the seal is checked, and only
those checked bytes are used (unpickled, executed, or copied to a private file that is
then dlopen'ed), so there is no window between the check and the load. A file that fails
the check is deleted and rebuilt, with one RuntimeWarning naming it.

The secret is ``$GRAPHC_CACHE_KEY`` (a file path; for tests), else
``$XDG_CONFIG_HOME/graphc/cache.key``, else ``~/.config/graphc/cache.key`` (where that
cannot be created, e.g. a read-only home: ``.<cache folder name>.key`` beside the cache
folder): outside the cache, created once (atomically, mode 0600) and refused if anyone
else could read it.

A cache directory that another user could write to (its folders, or their parents up to
the home directory, group/other-writable or owned by someone else) is refused with a
:class:`CacheTrustError`, as ssh refuses such a ``~/.ssh``: whoever can write there could
make graphc run their code. Folders graphc creates are made mode 0700. Temporary files a
writer killed before its rename left behind are deleted (once they are an hour old) by the
first process that uses their folder.

This file imports nothing of graphc at module level: the Numba compile workers
(backends/numba_cpu/kernel_import.py) load it from its path without importing graphc.
"""
from __future__ import annotations

import hmac
import os
import secrets
import shutil
import stat
import tempfile
import threading
import time
import warnings
from pathlib import Path

try:
    from .errors import GraphcError
except ImportError:          # loaded from its file by a compile worker (no package)
    class GraphcError(Exception):
        pass


class CacheTrustError(GraphcError):
    """A cache (or key) directory or file that others could write or read: graphc will not
    load code from it. The message names the path and the fix."""


class CacheDirError(GraphcError):
    """The cache directory cannot be made or used (a path through a file, a folder the
    system will not create); the message names the path and the fix."""


KEY_ENV = "GRAPHC_CACHE_KEY"
# The seal: this line, the hex HMAC, a newline; at the end of the file (a comment to
# Python, ignored by the dynamic loader, cut off before Numba unpickles anything).
SEAL = b"\n# graphc-hmac-sha256: "
_SEAL_LEN = len(SEAL) + 64 + 1
_DOMAIN = b"graphc-cache-v1\0"

_WHO = {0o020: "group", 0o002: "others", 0o022: "group and others"}
_LOCK = threading.Lock()
_CHECKED: set[str] = set()          # folders found trustworthy in this process
_KEYS: dict[str, bytes] = {}        # key path -> key


def cache_root() -> Path:
    base = os.environ.get("GRAPHC_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                ".cache")
        base = os.path.join(xdg, "graphc")
    return Path(base)


def cache_subdir(name: str) -> Path:
    """``cache_root() / name``, created if needed (mode 0700), after checking that no one
    else can write to it (:class:`CacheTrustError` otherwise)."""
    return private_dir(cache_root() / name, cache_root())


def private_dir(path: Path, owned_from: Path | None = None) -> Path:
    """Create ``path`` (and missing parents) with mode 0700 and check it is trustworthy:
    ``path`` and its parents down from ``owned_from`` (default: ``path`` itself) must be
    the user's and writable by no one else; further up, to the home directory (or ``/``
    outside it), each must be the user's or root's and not writable by others unless it
    is sticky (as /tmp)."""
    path = Path(path)
    key = str(path)
    if key in _CHECKED:
        return path
    own = path if owned_from is None else owned_from
    existing = Path(os.path.abspath(path))
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise CacheDirError(f"graphc: cannot use the cache directory {path}: {existing} is "
                            "not a directory; set GRAPHC_CACHE_DIR to a folder of yours")
    check_trusted(existing, own, shown=path)     # before creating anything there
    try:
        _makedirs(path)
    except OSError as e:
        raise CacheDirError(f"graphc: cannot create the cache directory {path}: "
                            f"{e.strerror or e} ({e.filename or path}); set GRAPHC_CACHE_DIR "
                            "to a folder you can write") from None
    if not path.is_dir():
        raise CacheDirError(f"graphc: cannot use the cache directory {path}: it is not a "
                            "directory; set GRAPHC_CACHE_DIR to a folder of yours")
    check_trusted(path, own)
    sweep_temporaries(path)
    _CHECKED.add(key)
    return path


STALE_AFTER_S = 3600.0    # a temporary file this old has no writer left


def _is_temporary(name: str) -> bool:
    """A name :func:`write_atomic` (``.<file>.<random>.tmp``) or the emulator's loader
    (``.load-<random>.so``) gives its temporary files."""
    return name.startswith(".") and (name.endswith(".tmp") or
                                     name.startswith(".load-") and name.endswith(".so"))


def sweep_temporaries(folder, max_age_s: float = STALE_AFTER_S) -> int:
    """Delete the temporary files in ``folder`` that a writer killed before its rename
    (or a loader killed before its unlink) left behind: only those older than
    ``max_age_s``, so a writer still at work keeps its file. Nothing reads them; they
    only take space. Returns how many were deleted."""
    now = time.time()
    n = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if not _is_temporary(e.name):
            continue
        try:
            if e.is_file(follow_symlinks=False) and now - e.stat(
                    follow_symlinks=False).st_mtime > max_age_s:
                os.unlink(e.path)
                n += 1
        except OSError:
            pass                     # gone already (another process swept it)
    return n


def _makedirs(path: Path) -> None:
    missing = []
    p = Path(os.path.abspath(path))
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass


def check_trusted(path: Path, owned_from: Path, what: str = "the cache directory",
                  shown: Path | None = None) -> None:
    """Raise :class:`CacheTrustError` when a user other than this one (or root) could
    write into ``path`` (see :func:`private_dir`); the message names ``what`` ``shown``
    (default ``path``) is, and the folder at fault."""
    if os.name != "posix":
        return
    uid = os.geteuid()
    real = os.path.realpath(path)
    own = os.path.realpath(owned_from)
    home = os.path.realpath(os.path.expanduser("~"))
    stop = home if (real + os.sep).startswith(home + os.sep) else os.sep
    shown = path if shown is None else shown
    p = real
    while True:
        st = os.stat(p)
        mine = p == own or (p + os.sep).startswith(own.rstrip(os.sep) + os.sep)
        if mine and st.st_uid != uid or not mine and st.st_uid not in (uid, 0):
            raise CacheTrustError(
                f"graphc: refusing {what} {shown}: {p} is owned by uid "
                f"{st.st_uid}, not by you (uid {uid}); another user could make graphc run "
                "their code. Use a cache directory of your own (set GRAPHC_CACHE_DIR)")
        if st.st_mode & 0o022 and (mine or not st.st_mode & stat.S_ISVTX):
            raise CacheTrustError(
                f"graphc: refusing {what} {shown}: {p} is writable by "
                f"{_WHO[st.st_mode & 0o022]} (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); another user could make graphc run "
                f"their code. Fix: chmod go-w {p}")
        if p == stop or p == os.sep:
            return
        p = os.path.dirname(p)


# ---- the key --------------------------------------------------------------------------------

class _KeyUnavailable(CacheTrustError):
    """The key's folder or file cannot be created (a read-only home, say)."""


def key_path() -> Path:
    env = os.environ.get(KEY_ENV)
    if env:
        return Path(env)
    cfg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".config")
    return Path(cfg) / "graphc" / "cache.key"


def _key_paths() -> list[Path]:
    """Where the key is looked for: :func:`key_path`; without ``$GRAPHC_CACHE_KEY``, where
    that cannot be created, beside the cache folder (in its parent, not inside it)."""
    paths = [key_path()]
    if not os.environ.get(KEY_ENV):
        root = Path(os.path.abspath(cache_root()))
        paths.append(root.parent / f".{root.name}.key")
    return paths


def cache_key() -> bytes:
    """The per-user secret that seals cache files (created on first use)."""
    paths = _key_paths()
    k = "\0".join(map(str, paths)) + "\0" + str(cache_root())
    key = _KEYS.get(k)
    if key is None:
        with _LOCK:
            key = _KEYS.get(k)
            for n, path in enumerate(paths):
                if key is not None:
                    break
                try:
                    key = _load_key(path)
                except _KeyUnavailable:
                    if n == len(paths) - 1:
                        raise
            _KEYS[k] = key
    return key


def _load_key(path: Path) -> bytes:
    root = os.path.realpath(cache_root())
    if (os.path.realpath(path) + os.sep).startswith(root + os.sep):
        raise CacheTrustError(f"graphc: the cache key {path} must not be inside the cache "
                              f"{cache_root()} (set {KEY_ENV} to a path outside it)")
    folder = path.parent
    try:
        _makedirs(folder)
    except OSError as e:
        raise _KeyUnavailable(f"graphc: cannot create the folder of the cache key {path}: "
                              f"{e} (set {KEY_ENV} to a file path graphc may create)") from None
    check_trusted(folder, folder, "the folder of the cache key", folder)
    for attempt in range(50):
        try:
            fd = os.open(path, _OPEN_FLAGS)      # a FIFO there: no block (refused below)
        except FileNotFoundError:
            try:
                _create_key(path)
            except OSError as e:
                raise _KeyUnavailable(f"graphc: cannot create the cache key {path}: {e} "
                                      f"(set {KEY_ENV} to a file path graphc may create)"
                                      ) from None
            continue
        except OSError as e:
            raise CacheTrustError(f"graphc: cannot read the cache key {path}: {e}") from None
        try:
            st = os.fstat(fd)
            if os.name == "posix":
                if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                    raise CacheTrustError(f"graphc: the cache key {path} is not a file of "
                                          "yours; delete it (a new one is made)")
                if st.st_mode & 0o077:
                    raise CacheTrustError(
                        f"graphc: the cache key {path} is readable or writable by others "
                        f"(mode {stat.S_IMODE(st.st_mode):04o}); anyone who reads it could "
                        f"make graphc run their code. Fix: chmod 600 {path}")
            text = os.read(fd, 200)
        finally:
            os.close(fd)
        text = text.strip()
        if len(text) == 64:
            try:
                return bytes.fromhex(text.decode("ascii"))
            except ValueError:
                pass
        if not text and attempt < 49:
            time.sleep(0.01)      # being written by another process (no hard links here)
            continue
        raise CacheTrustError(f"graphc: the cache key {path} is not a graphc key; delete "
                              "it (a new one is made and the cache is rebuilt)")
    raise CacheTrustError(f"graphc: could not create the cache key {path}")


def _create_key(path: Path) -> None:
    """Write a new key to ``path`` unless one appears first (atomic: a hard link of a
    finished temporary file; where there are none, an exclusive create)."""
    data = secrets.token_hex(32).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cache.key.")    # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    finally:
        os.unlink(tmp)


# ---- sealed files --------------------------------------------------------------------------

def _mac(name: str, payload) -> bytes:
    h = hmac.new(cache_key(), _DOMAIN, "sha256")
    h.update(name.encode() + b"\0")
    h.update(payload)
    return h.hexdigest().encode()


def seal(name: str, payload: bytes) -> bytes:
    """``payload`` with its seal appended, for a cache file named ``name``."""
    return bytes(payload) + SEAL + _mac(name, payload) + b"\n"


def unseal(name: str, data) -> bytes | None:
    """The payload of ``data`` (a cache file named ``name``) if its seal is good, else
    None."""
    if data is None or len(data) < _SEAL_LEN:
        return None
    tail = data[-_SEAL_LEN:]
    if tail[:len(SEAL)] != SEAL or tail[-1:] != b"\n":
        return None
    payload = data[:-_SEAL_LEN]
    if hmac.compare_digest(bytes(tail[len(SEAL):-1]), _mac(name, payload)):
        return bytes(payload)
    return None


# Opening a FIFO for reading blocks until someone writes to it; O_NONBLOCK does not, and
# changes nothing for a regular file (each open is checked to be one before it is read).
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_NONBLOCK", 0))


def read_bytes(path) -> bytes:
    """The bytes of ``path`` (a regular file, not followed through a symlink), read once;
    anything else (a symlink, a FIFO, a device, a folder) is an OSError, never read."""
    fd = os.open(path, _OPEN_FLAGS)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
        return f.read()


def read_sealed(path, what: str, problem: str = "does not match its hash "
                "(corrupt or modified)") -> bytes | None:
    """The checked payload of the sealed cache file ``path``; None if there is none. A
    file that is there but fails the check is deleted, with one warning naming it and
    ``what`` it is."""
    path = Path(path)
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        return None
    except OSError:
        data = None                  # a symlink, a folder, unreadable: not ours
    payload = unseal(path.name, data)
    if payload is None:
        discard(path, what, problem)
    return payload


def discard(path, what: str, problem: str = "does not match its hash "
            "(corrupt or modified)") -> None:
    """Delete the untrusted cache file ``path`` with one RuntimeWarning naming it."""
    warnings.warn(f"graphc: cached {what} {path} {problem}; deleted it, rebuilding it",
                  RuntimeWarning, stacklevel=3)
    remove(path)


def remove(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)
    except OSError:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


def write_sealed(path, payload: bytes) -> bytes:
    """Write ``payload`` sealed to ``path`` atomically (a concurrent reader sees the old
    or the new file); returns the bytes written."""
    path = Path(path)
    data = seal(path.name, payload)
    write_atomic(path, data)
    return data


def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: a concurrent
    reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if os.path.isdir(path) and not os.path.islink(path):
            remove(path)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):     # a full disk, a folder gone: say which file, and why
            raise CacheDirError(f"graphc: cannot write the cache file {path}: "
                                f"{e.strerror or e}; free space there or set "
                                "GRAPHC_CACHE_DIR to another folder") from None
        raise


__all__ = ["CacheTrustError", "CacheDirError", "cache_root", "cache_subdir", "private_dir", "check_trusted",
           "sweep_temporaries",
           "key_path", "cache_key", "seal", "unseal", "read_sealed", "write_sealed",
           "discard", "read_bytes"]
