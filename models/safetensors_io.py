"""Reading safetensors files (never pickle), hardened against hostile files.

The format: 8 bytes little-endian header length N, N bytes of JSON header
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``),
then the raw little-endian data; offsets count from the end of the header. The header is
parsed here (cheap, and it gives names and shapes for checking before any data is read).
Data are memory-mapped here from the one descriptor that was opened and checked (never
by path again, so a file swapped in after the check is not read) and copied out; bfloat16,
which NumPy lacks, is widened to float32 exactly. The ``safetensors`` package is not
needed to read.

Nothing in a file can make this module crash, hang or run code: every problem is a
:class:`graphc.CheckpointError` naming the file and the tensor or field. The header is
size-limited (:data:`MAX_HEADER_BYTES`), depth- and entry-limited (:data:`MAX_JSON_DEPTH`,
:data:`MAX_TENSORS_PER_FILE`, both counted on the bytes before parsing); duplicate names,
malformed entries (a dim that is not a non-negative integer, a bool for an int, an unknown
dtype), offsets that are reversed, overlap, leave holes or run past the end of the file
are refused. Files must be regular files inside the checkpoint
directory (after symlinks are resolved; the Hugging Face hub cache's
``snapshots/<rev>/ -> ../../blobs/`` links are allowed), so a FIFO or ``/dev/zero`` cannot
hang a read and an index cannot point at ``../elsewhere``.
"""
from __future__ import annotations

import json
import math
import os
import stat
import struct
from dataclasses import dataclass

import numpy as np

from graphc.errors import CheckpointError

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
           "BOOL": np.bool_}
_CODES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32",
          np.dtype(np.float16): "F16", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32",
          np.dtype(np.int16): "I16", np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8",
          np.dtype(np.bool_): "BOOL"}

#: The JSON header's size limit. The format allows 100 MB; graphc takes 32 MiB (the
#: headers of every shard of DeepSeek-V2 236B together are ~3 MB), so a hostile header is
#: parsed in seconds. Raise it here for a file that needs more.
MAX_HEADER_BYTES = 32 * 1024 * 1024
#: A valid header nests 3 deep (``{name: {"shape": [...]}}``); anything deeper is refused.
MAX_JSON_DEPTH = 8
#: Entries one header may hold (a 5 GB shard of DeepSeek-V2 holds ~3k; all of V2-Lite in
#: one file ~5.5k; raise this for a file with more). With it, a header
#: may hold at most 3 containers and 12 values per entry, counted on the bytes before
#: parsing, so even a header of tiny values parses to a bounded number of objects.
MAX_TENSORS_PER_FILE = 1 << 16
#: A dimension above this is refused outright (no real tensor has 2**48 rows).
MAX_DIM = 1 << 48
#: A small JSON file (config.json, the shard index) larger than this is refused unread.
MAX_JSON_FILE_BYTES = 16 * 1024 * 1024
#: Values a small JSON file may hold (an index of 2**19 tensors; a config has ~60).
MAX_JSON_VALUES = 1 << 20
_MAX_NAME = 1024


def show(v, limit: int = 60) -> str:
    """``repr(v)`` cut to ``limit`` characters (hostile values can be huge)."""
    try:
        r = repr(v)
    except Exception:      # pragma: no cover - a repr that raises (not from JSON)
        r = f"<{type(v).__name__}>"
    return r if len(r) <= limit else r[: limit - 3] + "..."


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str           # safetensors dtype string ("F32", "BF16", ...)
    shape: tuple
    begin: int           # absolute byte offsets in the file
    end: int
    path: str


# -- files inside a directory ----------------------------------------------------------------

def _allowed_roots(directory: str) -> list[str]:
    root = os.path.realpath(directory)
    roots = [root]
    # the Hugging Face hub cache: <repo>/snapshots/<rev>/<file> -> ../../blobs/<hash>
    parent = os.path.dirname(os.path.abspath(directory))
    if os.path.basename(parent) == "snapshots":
        roots.append(os.path.realpath(os.path.join(parent, os.pardir, "blobs")))
    return roots


def safe_path(directory: str, name: str, what: str = "file") -> str:
    """``directory/name``, refused unless ``name`` is a relative path that (with every
    symlink resolved) stays inside ``directory`` and names a regular file."""
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > 4096:
        raise CheckpointError(f"{directory}: {what} name {show(name)} is not a file name")
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise CheckpointError(f"{directory}: {what} {show(name)} is outside the checkpoint "
                              "directory (absolute paths and '..' are refused)")
    path = os.path.join(directory, name)
    real = os.path.realpath(path)
    if not any(os.path.commonpath([real, r]) == r for r in _allowed_roots(directory)):
        raise CheckpointError(f"{path}: {what} {show(name)} resolves to {show(real, 200)}, "
                              "outside the checkpoint directory (a symlink out is refused)")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {what} {show(name)} is missing") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: {what} {show(name)} is not a regular file "
                              "(a FIFO, device or directory is never read)")
    return path


def open_regular(path: str, what: str = "file"):
    """``path`` opened for reading (binary) if it is a regular file; a CheckpointError
    otherwise. Opened without blocking (a FIFO would wait for a writer forever) and
    checked on the opened descriptor, so a file swapped after the directory's check is
    caught too."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{path}: {what} is not a regular file (a FIFO, device or "
                                  "directory is never read)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# -- JSON with limits --------------------------------------------------------------------------

_BRACKETS = np.zeros(256, np.int8)
_BRACKETS[[ord("["), ord("{")]] = 1
_BRACKETS[[ord("]"), ord("}")]] = -1


def json_depth(raw: bytes, chunk: int = 1 << 20) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text (see :func:`json_stats`)."""
    return json_stats(raw, chunk)[0]


def json_stats(raw: bytes, chunk: int = 1 << 20) -> tuple[int, int, int]:
    """(deepest nesting, containers, commas) of JSON text, strings (with their escapes)
    skipped. Vectorised over 1 MiB chunks with the scanner state carried between them, so
    a header is checked with a few MiB of scratch before any parsing: a deep or crowded
    one can neither recurse nor allocate much. Values <= containers + commas + 1."""
    depth = best = containers = commas = 0
    in_str = 0           # inside a string at the chunk start
    run = 0              # backslashes ending the previous chunk
    for lo in range(0, len(raw), chunk):
        a = np.frombuffer(raw, np.uint8, min(chunk, len(raw) - lo), lo)
        n = a.size
        step = _BRACKETS[a]
        quote = a == 34
        bs = a == 92
        if run or bs.any():
            idx = np.arange(n)
            # the last non-backslash at or before i (-1 - run stands for the carried run)
            last_non = np.maximum.accumulate(np.where(bs, -1 - run, idx))
            before = np.empty(n, np.int64)                       # backslashes before i
            before[0] = run
            before[1:] = idx[:-1] - last_non[:-1]
            quote &= before % 2 == 0                             # unescaped quotes only
            run = int(n - 1 - last_non[-1])
        comma = a == 44
        if in_str or quote.any():
            q = np.cumsum(quote, dtype=np.int64)
            inside = (q - quote + in_str) % 2 == 1
            step[inside] = 0
            comma &= ~inside
            in_str = (in_str + int(q[-1])) % 2
        c = np.cumsum(step, dtype=np.int64)
        best = max(best, depth + int(c.max()))
        depth += int(c[-1])
        containers += int(np.count_nonzero(step == 1))
        commas += int(np.count_nonzero(comma))
    return best, containers, commas


class _Pairs:
    """``object_pairs_hook`` refusing duplicate keys and counting objects (so a header
    of millions of entries stops at the limit, not after it is all in memory)."""

    def __init__(self, where: str, max_objects: int):
        self.where, self.left = where, max_objects

    def __call__(self, pairs):
        self.left -= 1
        if self.left < 0:      # pragma: no cover - the byte scan counts them first
            raise CheckpointError(f"{self.where}: more JSON objects than the limit")
        d = {}
        for k, v in pairs:
            if k in d:
                raise CheckpointError(f"{self.where}: duplicate name {show(k)}")
            d[k] = v
        return d


def loads_limited(raw: bytes, where: str, max_containers: int, max_values: int):
    """JSON bytes -> value; depth, containers, values and duplicate keys limited (the
    first three counted on the bytes before parsing); every failure a CheckpointError
    naming ``where``."""
    depth, containers, commas = json_stats(raw)
    if depth > MAX_JSON_DEPTH:
        raise CheckpointError(f"{where}: JSON nested {depth} deep (the limit is "
                              f"{MAX_JSON_DEPTH})")
    if containers > max_containers or commas + 1 > max_values:
        raise CheckpointError(f"{where}: {containers:,} JSON objects/arrays and "
                              f"{commas + 1:,} values, over the limit of "
                              f"{max_containers:,} and {max_values:,} (refused unparsed)")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_Pairs(where, containers))
    except CheckpointError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError) as e:
        # ValueError: bad JSON, or an integer of more than 4300 digits
        raise CheckpointError(f"{where}: not valid JSON ({show(str(e), 200)})") from None


def read_json_file(path: str, what: str = "JSON file"):
    """A small JSON file (config.json, an index), size- and depth-limited."""
    try:
        with open_regular(path, what) as f:
            raw = f.read(MAX_JSON_FILE_BYTES + 1)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    if len(raw) > MAX_JSON_FILE_BYTES:
        raise CheckpointError(f"{path}: {what} is larger than {MAX_JSON_FILE_BYTES:,} bytes "
                              "(refused unread)")
    return loads_limited(raw, path, MAX_JSON_VALUES, MAX_JSON_VALUES)


# -- the header --------------------------------------------------------------------------------

def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_header(path: str) -> dict[str, TensorInfo]:
    """Names, dtypes, shapes and offsets of the tensors in one safetensors file."""
    try:
        with open_regular(path, "safetensors file") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw)
            if 8 + n > size:
                raise CheckpointError(f"{path}: not a safetensors file (header length {n:,} "
                                      f"does not fit a {size:,}-byte file)")
            if n > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: header length {n:,} is over the "
                                      f"{MAX_HEADER_BYTES:,}-byte limit (MAX_HEADER_BYTES)")
            text = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    if len(text) != n:
        raise CheckpointError(f"{path}: header shorter than its length {n:,} (file changed?)")
    if not text.lstrip().startswith(b"{"):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    header = loads_limited(text, f"{path}: header", 3 * MAX_TENSORS_PER_FILE + 2,
                           12 * MAX_TENSORS_PER_FILE)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    start = 8 + n
    data = size - start
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(
            isinstance(v, str) for v in meta.values())):
        raise CheckpointError(f"{path}: __metadata__ {show(meta)} is not an object of "
                              "strings")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {show(name)}"
        if len(name) > _MAX_NAME:
            raise CheckpointError(f"{where}: name longer than {_MAX_NAME} characters")
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{where} has a malformed header entry {show(info)} (needs "
                                  "exactly dtype, shape, data_offsets)")
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise CheckpointError(f"{where} has unsupported dtype {show(dtype)} (known: "
                                  f"{', '.join(_DTYPES)})")
        if not isinstance(shape, list) or len(shape) > 16 or not all(
                _int(d) and 0 <= d <= MAX_DIM for d in shape):
            raise CheckpointError(f"{where} has shape {show(shape)}: not a list of at most 16 "
                                  f"integers in 0..{MAX_DIM}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_int(x) for x in offs)):
            raise CheckpointError(f"{where} has data_offsets {show(offs)}: not two integers")
        b, e = offs
        nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
        if not 0 <= b <= e <= data or e - b != nbytes:
            raise CheckpointError(f"{where} ({dtype}{list(shape)}, {nbytes:,} bytes) has data "
                                  f"offsets [{b}, {e}] that do not fit its size or the file "
                                  f"({data:,} bytes of data)")
        out[name] = TensorInfo(name, dtype, tuple(shape), start + b, start + e, path)
    # the data buffer is fully indexed: no overlap, no hole, nothing after (the format)
    pos, last = start, None
    for t in sorted(out.values(), key=lambda t: (t.begin, t.end)):
        if t.end == t.begin:              # empty: takes no bytes
            continue
        if t.begin < pos:
            raise CheckpointError(f"{path}: tensor {show(t.name)} (data_offsets "
                                  f"[{t.begin - start}, {t.end - start}]) overlaps tensor "
                                  f"{show(last.name)} ([{last.begin - start}, "
                                  f"{last.end - start}])")
        if t.begin > pos:
            raise CheckpointError(f"{path}: tensor {show(t.name)} starts at data offset "
                                  f"{t.begin - start}, leaving a hole after offset "
                                  f"{pos - start} (the format allows none)")
        pos, last = t.end, t
    if pos != size:
        raise CheckpointError(f"{path}: {size - pos:,} bytes after the last tensor's data "
                              "(the format allows none)")
    return out


def read_tensor(info: TensorInfo) -> np.ndarray:
    """The tensor's data as a NumPy array (bfloat16 widened to float32)."""
    if info.end == info.begin:
        return np.zeros(info.shape, np.float32 if info.dtype == "BF16" else _DTYPES[info.dtype])
    # One open, checked on its descriptor (a FIFO swapped in since the directory's check is
    # refused, never waited on), and the data mapped from that descriptor: the bytes read
    # are the checked file's. (The safetensors package would open the path again.)
    try:
        with open_regular(info.path, "safetensors file") as f:
            a = np.memmap(f, dtype=np.dtype(_DTYPES[info.dtype]).newbyteorder("<"),
                          mode="r", offset=info.begin, shape=info.shape)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{info.path}: cannot read tensor {info.name!r}: {e}") from None
    if info.dtype == "BF16":
        return (np.asarray(a).astype(np.uint32) << 16).view(np.float32)
    return np.array(a)


# -- directories -------------------------------------------------------------------------------

def checkpoint_files(directory: str) -> tuple[list[str], dict | None]:
    """(the safetensors files of a Hugging Face checkpoint directory, the index's weight map
    or None): those listed in ``model.safetensors.index.json`` when it exists, else every
    ``*.safetensors``. Every path stays inside ``directory``."""
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: not a directory")
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.lexists(index):
        safe_path(directory, "model.safetensors.index.json", "index")
        d = read_json_file(index, "index")
        weight_map = d.get("weight_map") if isinstance(d, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: not a safetensors index (no 'weight_map' "
                                  "object)")
        for k, fn in weight_map.items():
            if not isinstance(fn, str):
                raise CheckpointError(f"{index}: weight_map[{show(k)}] is {show(fn)}, not a "
                                      "file name")
        files = sorted(set(weight_map.values()))
        for fn in files:
            safe_path(directory, fn, f"shard listed in {os.path.basename(index)},")
        return [os.path.join(directory, fn) for fn in files], weight_map
    files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    if not files:
        other = sorted(f for f in os.listdir(directory) if f.endswith((".bin", ".pt", ".pth")))
        hint = (f" (found {', '.join(other)}: pickle checkpoints are never loaded; convert "
                "them to safetensors)") if other else ""
        raise CheckpointError(f"{directory}: no .safetensors files{hint}")
    return [safe_path(directory, f, "safetensors file") for f in files], None


def read_headers(directory: str) -> dict[str, TensorInfo]:
    """Every tensor of a checkpoint directory by name; a name in two files, or in another
    file than the index says, is an error."""
    files, weight_map = checkpoint_files(directory)
    out: dict[str, TensorInfo] = {}
    for path in files:
        for name, info in read_header(path).items():
            if name in out:
                raise CheckpointError(f"tensor {name!r} is in both {out[name].path} and {path}")
            if weight_map is not None:
                listed = weight_map.get(name)
                if listed is None:
                    raise CheckpointError(f"tensor {name!r} is in {path} but not in the "
                                          "index's weight_map")
                if os.path.join(directory, listed) != path:
                    raise CheckpointError(f"tensor {name!r} is in {path}, the index says "
                                          f"{listed!r}")
            out[name] = info
    if weight_map is not None:
        absent = set(weight_map) - set(out)
        if absent:
            name = sorted(absent)[0]
            raise CheckpointError(f"tensor {name!r} is listed in the index (in "
                                  f"{weight_map[name]!r}) but that file does not hold it")
    return out


# -- writing (tests, tools) -------------------------------------------------------------------

def write_file(path, tensors: dict, metadata: dict | None = None, bf16: bool = False) -> None:
    """Write ``{name: array}`` as one safetensors file (``bf16``: float arrays as bfloat16,
    the top 16 bits of float32, i.e. truncated). The inverse of :func:`read_header` +
    :func:`read_tensor`; no dependency on the ``safetensors`` package."""
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, a in tensors.items():
        a = np.asarray(a, order="C")          # (ascontiguousarray makes 0-d arrays 1-d)
        if bf16 and a.dtype.kind == "f":
            raw, code = (a.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes(), \
                "BF16"
        else:
            if a.dtype.newbyteorder("=") not in _CODES:
                raise CheckpointError(f"tensor {name!r}: dtype {a.dtype} has no safetensors "
                                      "code")
            a = a.astype(a.dtype.newbyteorder("<"), copy=False)
            raw, code = a.tobytes(), _CODES[a.dtype.newbyteorder("=")]
        header[name] = {"dtype": code, "shape": list(a.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)              # 8-byte aligned data, as the package writes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
