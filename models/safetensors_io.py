"""Reading safetensors files (never pickle).

The format: 8 bytes little-endian header length N, N bytes of JSON header
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``),
then the raw little-endian data; offsets count from the end of the header. The header is
parsed here (cheap, and it gives names and shapes for checking before any data is read).
Data are read with the ``safetensors`` package's NumPy API when it is installed and knows
the dtype, else memory-mapped here (also the path for bfloat16, which NumPy lacks: widened
to float32 exactly).
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

import numpy as np

from graphc.errors import CheckpointError

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
           "BOOL": np.bool_}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str           # safetensors dtype string ("F32", "BF16", ...)
    shape: tuple
    begin: int           # absolute byte offsets in the file
    end: int
    path: str


def read_header(path: str) -> dict[str, TensorInfo]:
    """Names, dtypes, shapes and offsets of the tensors in one safetensors file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER or 8 + n > size:
                raise CheckpointError(f"{path}: not a safetensors file (header length {n} "
                                      f"does not fit a {size}-byte file)")
            header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a safetensors file (bad JSON header: {e})") \
            from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    start = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = info["dtype"], tuple(int(d) for d in info["shape"])
            b, e = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry "
                                  f"{info!r}") from None
        if dtype not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize
        if e - b != nbytes or b < 0 or start + e > size:
            raise CheckpointError(f"{path}: tensor {name!r} ({dtype}{list(shape)}) has data "
                                  f"offsets [{b}, {e}] that do not fit its size or the file")
        out[name] = TensorInfo(name, dtype, shape, start + b, start + e, path)
    return out


def read_tensor(info: TensorInfo) -> np.ndarray:
    """The tensor's data as a NumPy array (bfloat16 widened to float32)."""
    if info.dtype != "BF16":
        try:
            from safetensors import safe_open
        except ImportError:
            safe_open = None
        if safe_open is not None:
            try:
                with safe_open(info.path, framework="numpy") as f:
                    return f.get_tensor(info.name)
            except Exception as e:  # the package refused the file: say which tensor
                raise CheckpointError(f"{info.path}: cannot read tensor {info.name!r}: {e}") \
                    from None
    a = np.memmap(info.path, dtype=np.dtype(_DTYPES[info.dtype]).newbyteorder("<"),
                  mode="r", offset=info.begin, shape=info.shape)
    if info.dtype == "BF16":
        return (np.asarray(a).astype(np.uint32) << 16).view(np.float32)
    return np.array(a)


def checkpoint_files(directory: str) -> list[str]:
    """The safetensors files of a Hugging Face checkpoint directory: those listed in
    ``model.safetensors.index.json`` when it exists, else every ``*.safetensors``."""
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: not a directory")
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a safetensors index ({e})") from None
        files = sorted(set(weight_map.values()))
        for fn in files:
            if not os.path.exists(os.path.join(directory, fn)):
                raise CheckpointError(f"{index} lists shard {fn!r}, which is missing")
        return [os.path.join(directory, fn) for fn in files]
    files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    if not files:
        other = sorted(f for f in os.listdir(directory) if f.endswith((".bin", ".pt", ".pth")))
        hint = (f" (found {', '.join(other)}: pickle checkpoints are never loaded; convert "
                "them to safetensors)") if other else ""
        raise CheckpointError(f"{directory}: no .safetensors files{hint}")
    return [os.path.join(directory, f) for f in files]


def read_headers(directory: str) -> dict[str, TensorInfo]:
    """Every tensor of a checkpoint directory by name; a name in two files is an error."""
    out: dict[str, TensorInfo] = {}
    for path in checkpoint_files(directory):
        for name, info in read_header(path).items():
            if name in out:
                raise CheckpointError(f"tensor {name!r} is in both {out[name].path} and {path}")
            out[name] = info
    return out
