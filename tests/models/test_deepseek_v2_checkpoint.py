"""Loading DeepSeek-V2 checkpoints (config.json + safetensors), written here by a small
safetensors writer of the test's own; good ones load to the same logits, bad ones raise
CheckpointError naming the tensor or file."""
import json
import struct
import sys

import numpy as np
import pytest

import graphc
from graphc.models import deepseek_v2 as dv

_CODES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64",
          np.dtype(np.float16): "F16"}


def write_safetensors(path, tensors, bf16=False):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        if bf16:   # top 16 bits of float32 (truncation): exactly representable values
            raw, code = (a.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes(), "BF16"
        else:
            raw, code = a.tobytes(), _CODES[a.dtype]
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def hf_tensors(model, fused=False):
    """The model's parameters under checkpoint names: experts per expert unless fused."""
    c, out = model.config, {}
    for name, a in model.params.items():
        if name.endswith("experts.gate_up_proj") and not fused:
            pre, I = name[: -len("gate_up_proj")], c.moe_intermediate_size
            for e in range(a.shape[0]):
                out[f"{pre}{e}.gate_proj.weight"] = a[e, :I]
                out[f"{pre}{e}.up_proj.weight"] = a[e, I:]
        elif name.endswith("experts.down_proj") and not fused:
            pre = name[: -len("down_proj")]
            for e in range(a.shape[0]):
                out[f"{pre}{e}.down_proj.weight"] = a[e]
        else:
            out[name] = a
    return out


def save(model, d, fused=False, shards=1, bf16=False, drop=(), add=None, reshape=None):
    d.mkdir(exist_ok=True)
    cfg = {"model_type": "deepseek_v2", **model.config.to_hf()}
    (d / "config.json").write_text(json.dumps(cfg))
    t = hf_tensors(model, fused)
    for k in drop:
        del t[k]
    t.update(add or {})
    for k, shape in (reshape or {}).items():
        t[k] = np.zeros(shape, np.float32)
    names = sorted(t)
    if shards == 1:
        write_safetensors(d / "model.safetensors", t, bf16)
        return d
    wmap = {}
    for s in range(shards):
        fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: t[k] for k in names[s::shards]}
        write_safetensors(d / fn, part, bf16)
        wmap.update({k: fn for k in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    return d


@pytest.fixture(scope="module")
def model():
    return dv.random(dv.preset("tiny"), seed=7)


IDS = np.array([5, 17, 2, 90, 33, 1, 64])


@pytest.mark.parametrize("layout", ["per_expert", "fused", "sharded", "no_package"])
def test_checkpoint_roundtrip(model, tmp_path, layout, monkeypatch):
    d = save(model, tmp_path / "ckpt", fused=layout == "fused",
             shards=3 if layout == "sharded" else 1)
    if layout == "no_package":   # the header parser and memory map of safetensors_io
        monkeypatch.setitem(sys.modules, "safetensors", None)
    loaded = dv.load(d)
    assert loaded.config == model.config
    assert sorted(loaded.params) == sorted(model.params)
    for k, a in model.params.items():
        np.testing.assert_array_equal(loaded.params[k], a, err_msg=k)
    np.testing.assert_array_equal(loaded.forward(IDS), model.forward(IDS))


def test_bf16_checkpoint_widens_exactly(model, tmp_path):
    d = save(model, tmp_path / "bf16", bf16=True)
    loaded = dv.load(d)
    for k, a in model.params.items():
        want = (a.view(np.uint32) & 0xFFFF0000).view(np.float32)
        np.testing.assert_array_equal(loaded.params[k], want, err_msg=k)


BAD = {
    "missing": (dict(drop=["model.layers.1.mlp.experts.3.up_proj.weight"]),
                r"missing tensor\(s\) model\.layers\.1\.mlp\.experts\.3\.up_proj\.weight"),
    "extra": (dict(add={"model.layers.0.mlp.bias": np.zeros(3, np.float32)}),
              r"unexpected tensor\(s\) model\.layers\.0\.mlp\.bias"),
    "shape": (dict(reshape={"model.layers.0.self_attn.kv_b_proj.weight": (56, 15)}),
              r"'model\.layers\.0\.self_attn\.kv_b_proj\.weight'.*\[56, 15\].*\[56, 16\]"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoint_names_the_tensor(model, tmp_path, case):
    kw, pattern = BAD[case]
    d = save(model, tmp_path / case, **kw)
    with pytest.raises(graphc.CheckpointError, match=pattern):
        dv.load(d)


def test_not_safetensors(model, tmp_path):
    d = save(model, tmp_path / "garbage")
    (d / "model.safetensors").write_bytes(b"\x80\x02}q\x00(X\x05\x00\x00\x00pickle")
    with pytest.raises(graphc.CheckpointError, match="model.safetensors: not a safetensors"):
        dv.load(d)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(graphc.CheckpointError, match="pickle checkpoints are never loaded"):
        dv.load(d)
    with pytest.raises(graphc.CheckpointError, match="no config.json"):
        dv.load(tmp_path)
    d2 = save(model, tmp_path / "truncated")
    raw = (d2 / "model.safetensors").read_bytes()
    (d2 / "model.safetensors").write_bytes(raw[:-100])
    with pytest.raises(graphc.CheckpointError, match="data offsets"):
        dv.load(d2)


def test_bad_config(model, tmp_path):
    d = save(model, tmp_path / "cfg")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "topk_method": "noaux_tc"}))
    with pytest.raises(graphc.CheckpointError, match="config.json.*topk_method"):
        dv.load(d)
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(graphc.CheckpointError, match="llama"):
        dv.load(d)


def test_checkpoint_too_big_for_memory_says_so_before_reading(model, tmp_path, monkeypatch):
    """A checkpoint whose parameters do not fit the memory available (DeepSeek-V2-Lite is
    ~63 GB as float32) is refused before any tensor is read, with the sizes, instead of
    the process being killed halfway through loading."""
    from graphc.models import deepseek_v2_checkpoint as ck
    d = save(model, tmp_path / "big")
    n = sum(a.size for a in model.params.values())
    read = []
    monkeypatch.setattr(ck, "read_tensor", lambda info: read.append(info) or 1 / 0)
    monkeypatch.setattr(ck, "available_memory", lambda: 4 * n - 1)
    with pytest.raises(graphc.CheckpointError,
                       match=rf"{n:,} parameters.*float32.*more than the .* available"):
        dv.load(d)
    with pytest.raises(graphc.CheckpointError, match=rf"{n:,} parameters.*float64"):
        dv.load(d, dtype="float64")               # 8 bytes each
    assert read == []
    monkeypatch.undo()
    monkeypatch.setattr(ck, "available_memory", lambda: 4 * n - 1)
    assert dv.load(d, check_memory=False).params    # the caller knows better: loads
    monkeypatch.setattr(ck, "available_memory", lambda: 8 * n)
    assert dv.load(d, dtype="float64").params       # fits: loads
    monkeypatch.setattr(ck, "available_memory", lambda: None)   # unknown: no check
    assert dv.load(d).params


def test_available_memory_reads_the_system():
    from graphc.models.deepseek_v2_checkpoint import available_memory
    got = available_memory()
    assert got is None or 0 < got < 1 << 50
