"""Loading a Hugging Face DeepSeek-V2 checkpoint directory into graphc parameters.

Names and shapes are checked against the config from the safetensors headers before any
data is read; a missing, extra or misshapen tensor raises :class:`graphc.CheckpointError`
naming it. Routed experts are accepted per expert (``mlp.experts.{e}.gate_proj.weight`` ...,
the official layout and what ``transformers`` 5.x ``save_pretrained`` writes) or fused
(``mlp.experts.gate_up_proj`` [E, 2I, H], ``mlp.experts.down_proj`` [E, H, I]), and are
stacked into the fused layout either way. A checkpoint whose parameters would not fit
the memory available (at the dtype asked for) is refused before any data is read.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from graphc.errors import CheckpointError

from .safetensors_io import read_headers, read_tensor

# Buffers some exporters write that are not parameters (recomputed from the config).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def read_config(directory: str):
    from .deepseek_v2 import DeepseekV2Config
    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no config.json") from None
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    mt = d.get("model_type", "deepseek_v2")
    if mt != "deepseek_v2":
        raise CheckpointError(f"{path}: model_type {mt!r} is not 'deepseek_v2'")
    try:
        return DeepseekV2Config.from_hf(d)
    except CheckpointError:
        raise
    except Exception as e:  # a config field out of range (AttrError) or of the wrong type
        raise CheckpointError(f"{path}: {e}") from None


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


def load_checkpoint(directory, dtype: str = "float32", check_memory: bool = True):
    """(DeepseekV2Config, params) from a checkpoint directory. ``check_memory=False``
    loads even when the parameters look bigger than the memory available (swap, or a
    figure the check gets wrong)."""
    directory = os.fspath(directory)
    config = read_config(directory)
    from dataclasses import replace
    config = replace(config, dtype=dtype)
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

    need = sum(math.prod(shape) for shape in want.values()) * np.dtype(dtype).itemsize
    avail = available_memory() if check_memory else None
    if avail is not None and need > avail:
        n = need // np.dtype(dtype).itemsize
        raise CheckpointError(f"{directory}: the checkpoint's {n:,} parameters take "
                              f"{need / 2**30:.1f} GiB as {dtype}, more than the "
                              f"{avail / 2**30:.1f} GiB of memory available here; graphc "
                              "holds every weight in memory (nothing loaded; "
                              "load(..., check_memory=False) tries anyway)")

    def read(name):
        return read_tensor(infos[name]).astype(dtype, copy=False)

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
