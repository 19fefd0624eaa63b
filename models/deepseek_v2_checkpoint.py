"""Loading a Hugging Face DeepSeek-V2 checkpoint directory into graphc parameters.

Names and shapes are checked against the config from the safetensors headers before any
data is read; a missing, extra or misshapen tensor raises :class:`graphc.CheckpointError`
naming it. Routed experts are accepted per expert (``mlp.experts.{e}.gate_proj.weight`` ...,
the official layout and what ``transformers`` 5.x ``save_pretrained`` writes) or fused
(``mlp.experts.gate_up_proj`` [E, 2I, H], ``mlp.experts.down_proj`` [E, H, I]), and are
stacked into the fused layout either way.

Nothing in a checkpoint directory can crash, hang or run code here: every problem is a
:class:`graphc.CheckpointError` naming the field or tensor and the value. config.json is
size- and depth-limited and checked against the config's schema (types and bounds,
``deepseek_v2.CONFIG_SCHEMA``); the bytes the config implies are computed from it and
refused above the limit (the memory available, or ``max_bytes``) before anything is read
or allocated; safetensors headers are checked by :mod:`safetensors_io` (size, depth,
duplicates, overlaps, paths inside the directory); weights that are NaN or infinite are
refused naming the tensor (``allow_nonfinite=True`` loads them anyway).
"""
from __future__ import annotations

import math
import os

import numpy as np

from graphc.errors import CheckpointError

from .safetensors_io import (read_headers, read_json_file, read_tensor, safe_path,
                             show)

# Buffers some exporters write that are not parameters (recomputed from the config).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
#: Where the memory available cannot be read (and with ``check_memory=False``), the
#: largest parameter set loaded without ``max_bytes``: 1 TiB (DeepSeek-V2 236B as float32
#: is 0.94 TB).
DEFAULT_MAX_BYTES = 1 << 40
#: Routed-expert tensors a config may imply (layers x experts x 3 when stored per expert;
#: DeepSeek-V2 has 28,320): more would make the name tables themselves the problem.
MAX_EXPERT_TENSORS = 1 << 20
_FLOATS = ("float16", "float32", "float64")


def read_config(directory: str):
    from .deepseek_v2 import DeepseekV2Config
    path = os.path.join(directory, "config.json")
    if not os.path.lexists(path):
        raise CheckpointError(f"{directory}: no config.json")
    safe_path(directory, "config.json", "config")
    d = read_json_file(path, "config.json")
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    mt = d.get("model_type", "deepseek_v2")
    if mt != "deepseek_v2":
        raise CheckpointError(f"{path}: model_type {show(mt)} is not 'deepseek_v2'")
    try:
        return DeepseekV2Config.from_hf(d, require_shapes=True)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e.message.removeprefix('config.json: ')}") from None
    except Exception as e:  # pragma: no cover - the schema should catch everything first
        raise CheckpointError(f"{path}: {type(e).__name__}: {show(str(e), 200)}") from None


def implied_size(config) -> tuple[int, int]:
    """(parameters, routed-expert tensors when stored per expert) the config implies,
    computed from it alone (nothing allocated, ~15 shapes per layer)."""
    from .deepseek_v2 import param_shapes
    n = sum(math.prod(shape) for shape in param_shapes(config).values())
    moe = sum(config.is_moe_layer(l) for l in range(config.num_hidden_layers))
    return n, 3 * moe * config.n_routed_experts


def check_size(config, dtype: str, directory: str = "", check_memory: bool = True,
               max_bytes: int | None = None) -> int:
    """The bytes the config's parameters take as ``dtype``; a CheckpointError (with the
    number) when that is over the limit: ``max_bytes`` when given, else the memory
    available (:func:`available_memory`, with ``check_memory``), else
    :data:`DEFAULT_MAX_BYTES`."""
    n, experts = implied_size(config)
    where = f"{directory}: " if directory else ""
    if experts > MAX_EXPERT_TENSORS:
        raise CheckpointError(
            f"{where}config.json: num_hidden_layers {config.num_hidden_layers} with "
            f"n_routed_experts {config.n_routed_experts} means {experts:,} expert tensors, "
            f"over the limit of {MAX_EXPERT_TENSORS:,} (nothing read)")
    item = np.dtype(dtype).itemsize
    need = n * item
    avail = available_memory() if check_memory and max_bytes is None else None
    if avail is not None and need > avail:
        raise CheckpointError(f"{where}the checkpoint's {n:,} parameters take "
                              f"{need / 2**30:.1f} GiB ({need:,} bytes) as {dtype}, more "
                              f"than the {avail / 2**30:.1f} GiB of memory available here; "
                              "graphc holds every weight in memory (nothing loaded; "
                              "load(..., check_memory=False) tries anyway, "
                              "load(..., max_bytes=N) sets the limit)")
    limit = max_bytes if max_bytes is not None else DEFAULT_MAX_BYTES if avail is None \
        else None
    if limit is not None and need > limit:
        raise CheckpointError(f"{where}the checkpoint's {n:,} parameters take "
                              f"{need / 2**30:.1f} GiB ({need:,} bytes) as {dtype}, over the "
                              f"limit of {limit:,} bytes (nothing loaded; "
                              "load(..., max_bytes=N) raises the limit)")
    return need


def check_finite(name: str, a: np.ndarray, path: str = "") -> None:
    """A CheckpointError naming the tensor when ``a`` holds a NaN or an infinity (checked
    in chunks: no full-size temporary)."""
    flat = a.reshape(-1)
    step = 1 << 20
    for lo in range(0, flat.size, step):
        part = flat[lo: lo + step]
        ok = np.isfinite(part)
        if not ok.all():
            i = lo + int(np.argmin(ok))
            nan = int(np.isnan(flat).sum())
            inf = int(np.isinf(flat).sum())
            where = f" in {os.path.basename(path)}" if path else ""
            raise CheckpointError(
                f"tensor {name!r}{where} has non-finite values ({nan:,} NaN, {inf:,} "
                f"infinite, as {a.dtype}; the first, {flat[i]}, at flat index {i:,}); "
                "load(..., allow_nonfinite=True) loads it anyway")


def expected_files(config, present: set) -> tuple[dict, dict]:
    """(name -> shape of every tensor the files must hold, stacked name -> [(expert
    tensor names)] for the experts stored per expert)."""
    from .deepseek_v2 import param_shapes
    want, stacks = {}, {}
    for name, shape in param_shapes(config).items():
        if name.endswith("experts.gate_up_proj"):
            pre = name[: -len("gate_up_proj")]
            if name in present or pre + "down_proj" in present:
                want[name] = shape
                continue
            E, I2, H = shape
            parts = []
            for e in range(E):
                g, u = f"{pre}{e}.gate_proj.weight", f"{pre}{e}.up_proj.weight"
                want[g] = want[u] = (I2 // 2, H)
                parts.append((g, u))
            stacks[name] = parts
        elif name.endswith("experts.down_proj"):
            pre = name[: -len("down_proj")]
            if name in present or pre + "gate_up_proj" in present:
                want[name] = shape
                continue
            E, H, I = shape
            parts = []
            for e in range(E):
                d = f"{pre}{e}.down_proj.weight"
                want[d] = (H, I)
                parts.append((d,))
            stacks[name] = parts
        else:
            want[name] = shape
    return want, stacks


def _names(names) -> str:
    names = sorted(names)
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


def available_memory() -> int | None:
    """Bytes this process can still take: the system's MemAvailable, or less where a
    cgroup (a container) limits the process; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                used = int(f.read().strip())
            with open("/sys/fs/cgroup/memory.stat") as f:    # page cache the kernel can
                stat = dict(line.split() for line in f if line.strip())   # drop (a
            used -= int(stat.get("inactive_file", 0))      # checkpoint just copied in)
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def load_checkpoint(directory, dtype: str = "float32", check_memory: bool = True,
                    allow_nonfinite: bool = False, max_bytes: int | None = None):
    """(DeepseekV2Config, params) from a checkpoint directory. The bytes the config
    implies are checked before anything is read (see :func:`check_size`):
    ``check_memory=False`` loads even when the parameters look bigger than the memory
    available (swap, or a figure the check gets wrong); ``max_bytes`` sets the limit
    outright. ``allow_nonfinite=True`` loads NaN / infinite weights instead of refusing."""
    directory = os.fspath(directory)
    if dtype not in _FLOATS:
        raise CheckpointError(f"dtype {show(dtype)} is not one of {', '.join(_FLOATS)}")
    if max_bytes is not None and (not isinstance(max_bytes, int) or isinstance(
            max_bytes, bool) or max_bytes < 0):
        raise CheckpointError(f"max_bytes {show(max_bytes)} is not a byte count")
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: not a directory")
    config = read_config(directory)
    from dataclasses import replace
    config = replace(config, dtype=dtype)
    check_size(config, dtype, directory, check_memory, max_bytes)
    infos = {k: v for k, v in read_headers(directory).items()
             if not k.endswith(IGNORED_SUFFIXES)}
    want, stacks = expected_files(config, set(infos))
    missing = set(want) - set(infos)
    if missing:
        raise CheckpointError(f"{directory}: checkpoint is missing tensor(s) "
                              f"{_names(missing)} that the config needs")
    extra = set(infos) - set(want)
    if extra:
        raise CheckpointError(f"{directory}: checkpoint has unexpected tensor(s) "
                              f"{_names(extra)} that the config does not use (in "
                              f"{os.path.basename(infos[sorted(extra)[0]].path)})")
    for name, shape in want.items():
        got = infos[name]
        if got.shape != tuple(shape):
            raise CheckpointError(f"tensor {name!r} in {os.path.basename(got.path)} has shape "
                                  f"{list(got.shape)}, the config needs {list(shape)}")
        if got.dtype not in ("F32", "F16", "BF16", "F64"):
            raise CheckpointError(f"tensor {name!r} has dtype {got.dtype}; expected a float")

    def read(name):
        with np.errstate(over="ignore", invalid="ignore"):   # overflow: inf, checked next
            a = read_tensor(infos[name]).astype(dtype, copy=False)
        if not allow_nonfinite:
            check_finite(name, a, infos[name].path)
        return a

    params = {}
    stacked_parts = {n for parts in stacks.values() for p in parts for n in p}
    for name in want:
        if name not in stacked_parts:
            params[name] = read(name)
    for name, parts in stacks.items():
        first = [np.concatenate([read(n) for n in p], axis=0) for p in parts[:1]]
        out = np.empty((len(parts),) + first[0].shape, dtype)
        out[0] = first[0]
        for e, p in enumerate(parts[1:], start=1):
            out[e] = np.concatenate([read(n) for n in p], axis=0)
        params[name] = out
    return config, params
