"""Hostile DeepSeek-V2 checkpoints: each case starts from a tiny valid checkpoint directory
(graphc's own safetensors writer; with the `compare` extra also a real `transformers`
``save_pretrained`` directory) and breaks one thing. Every case must be a
graphc.CheckpointError whose message names the field or tensor and the value, with no
large allocation first (tracemalloc peak, a deterministic bound), never a RecursionError,
OverflowError, MemoryError, a hang or a silent load. Time is bounded only through
pytest-timeout when it is installed (no timed assertion)."""
import importlib.util
import json
import math
import os
import shutil
import struct
import sys
import tracemalloc

import numpy as np
import pytest

import graphc
from graphc.models import deepseek_v2 as dv
from graphc.models import deepseek_v2_checkpoint as ck
from graphc.models import safetensors_io as sio

pytestmark = ([pytest.mark.timeout(120)] if importlib.util.find_spec("pytest_timeout")
              else [])

PEAK_LIMIT = 64 * 1024 * 1024      # no case may allocate more than this before refusing


# -- a tiny valid checkpoint -------------------------------------------------------------

def hf_tensors(model):
    """Parameters under checkpoint names, routed experts per expert (the HF layout)."""
    c, out = model.config, {}
    for name, a in model.params.items():
        if name.endswith("experts.gate_up_proj"):
            pre, inter = name[: -len("gate_up_proj")], c.moe_intermediate_size
            for e in range(a.shape[0]):
                out[f"{pre}{e}.gate_proj.weight"] = a[e, :inter]
                out[f"{pre}{e}.up_proj.weight"] = a[e, inter:]
        elif name.endswith("experts.down_proj"):
            pre = name[: -len("down_proj")]
            for e in range(a.shape[0]):
                out[f"{pre}{e}.down_proj.weight"] = a[e]
        else:
            out[name] = a
    return out


def write_checkpoint(model, d, bf16=False):
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "deepseek_v2",
                                               **model.config.to_hf()}))
    sio.write_file(d / "model.safetensors", hf_tensors(model), {"format": "pt"}, bf16=bf16)
    return d


@pytest.fixture(scope="module")
def model():
    return dv.random(dv.preset("tiny"), seed=3)


@pytest.fixture(scope="module")
def base(model, tmp_path_factory):
    return write_checkpoint(model, tmp_path_factory.mktemp("base") / "ckpt")


# -- editing helpers ---------------------------------------------------------------------

def read_config(d):
    return json.loads((d / "config.json").read_text())


def write_config(d, cfg):
    (d / "config.json").write_text(json.dumps(cfg, allow_nan=True))


def cfg(**changes):
    """Set (or, for the value DELETE, remove) config.json fields."""
    def edit(d):
        c = read_config(d)
        for k, v in changes.items():
            if v is DELETE:
                c.pop(k, None)
            else:
                c[k] = v
        write_config(d, c)
    return edit


def rope(**changes):
    """Make the config YaRN (transformers 5.x rope_parameters) with these fields."""
    def edit(d):
        c = read_config(d)
        rp = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
              "original_max_position_embeddings": 32, "beta_fast": 32.0, "beta_slow": 1.0,
              "mscale": 0.707, "mscale_all_dim": 0.707}
        for k, v in changes.items():
            if v is DELETE:
                rp.pop(k)
            else:
                rp[k] = v
        c["rope_parameters"] = rp
        write_config(d, c)
    return edit


def raw_config(text: bytes):
    def edit(d):
        (d / "config.json").write_bytes(text)
    return edit


DELETE = object()
ST = "model.safetensors"


def split(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8: 8 + n]), raw[8 + n:]


def join(path, header_bytes: bytes, data: bytes, length=None):
    length = len(header_bytes) if length is None else length
    path.write_bytes(struct.pack("<Q", length) + header_bytes + data)


def header(fn):
    """Edit the parsed header of model.safetensors (data untouched)."""
    def edit(d):
        h, data = split(d / ST)
        fn(h)
        join(d / ST, json.dumps(h).encode(), data)
    return edit


def header_text(fn):
    """Replace the header's JSON text (fn: old text -> new text)."""
    def edit(d):
        h, data = split(d / ST)
        join(d / ST, fn(json.dumps(h)).encode("utf-8", "surrogatepass"), data)
    return edit


def set_entry(name, key, value):
    def fn(h):
        h[name][key] = value
    return header(fn)


def poke(name, value, fmt="<f", index=0):
    """Write ``value`` into element ``index`` of tensor ``name``'s data."""
    def edit(d):
        raw = bytearray((d / ST).read_bytes())
        (n,) = struct.unpack("<Q", raw[:8])
        b = json.loads(raw[8: 8 + n])[name]["data_offsets"][0]
        at = 8 + n + b + index * struct.calcsize(fmt)
        raw[at: at + struct.calcsize(fmt)] = struct.pack(fmt, value)
        (d / ST).write_bytes(bytes(raw))
    return edit


def overlap(d):
    """Point the later of two same-size norm weights at the earlier one's bytes."""
    h, data = split(d / ST)
    a, b = sorted(["model.layers.0.input_layernorm.weight",
                   "model.layers.0.post_attention_layernorm.weight"],
                  key=lambda k: h[k]["data_offsets"][0])
    h[b]["data_offsets"] = list(h[a]["data_offsets"])
    join(d / ST, json.dumps(h).encode(), data)


def index(weight_map_fn, shards=2):
    """Shard the checkpoint in two files with an index, then edit the weight map."""
    def edit(d):
        h, data = split(d / ST)
        names = sorted(k for k in h if k != "__metadata__")
        files = {}
        for s in range(shards):
            fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: read_tensor(h, data, k) for k in names[s::shards]}
            sio.write_file(d / fn, part)
            files.update({k: fn for k in part})
        (d / ST).unlink()
        wm = weight_map_fn(files, d)
        (d / "model.safetensors.index.json").write_text(
            wm if isinstance(wm, str) else json.dumps({"weight_map": wm}))
    return edit


def read_tensor(h, data, k):
    b, e = h[k]["data_offsets"]
    return np.frombuffer(data[b:e], "<f4").reshape(h[k]["shape"])


def moved(files, d):
    files = dict(files)
    files["model.norm.weight"] = "../elsewhere/model-00001-of-00002.safetensors"
    (d.parent / "elsewhere").mkdir(exist_ok=True)
    shutil.copy(d / "model-00001-of-00002.safetensors", d.parent / "elsewhere")
    return files


def symlink_out(target_name, make_target):
    def edit(d):
        outside = d.parent / "outside"
        outside.mkdir(exist_ok=True)
        make_target(d, outside / target_name)
        os.replace(d / target_name, d / (target_name + ".bak")) if (d / target_name).exists() \
            else None
        (d / target_name).symlink_to(outside / target_name)
        (d / (target_name + ".bak")).unlink(missing_ok=True)
    return edit


def copy_to(d, dst):
    shutil.copy(d / os.path.basename(dst), dst)


def sparse(name, size, head=b""):
    """A sparse file of ``size`` bytes (no disk used) starting with ``head``."""
    def edit(d):
        with open(d / name, "wb") as f:
            f.write(head)
            f.truncate(size)
    return edit


def fifo(name):
    def edit(d):
        (d / name).unlink()
        os.mkfifo(d / name)
    return edit


def nested(depth):
    return b'{"x":' + b"[" * depth + b"]" * depth + b"}"


# -- the cases: (edit, load keyword arguments, regex the message must match) ----------------

BIG = 2 ** 64
CASES = {
    # config.json: types, bounds, required fields
    "hidden_size_missing": (cfg(hidden_size=DELETE), {}, r"hidden_size is missing"),
    "hidden_size_null": (cfg(hidden_size=None), {}, r"hidden_size is null"),
    "hidden_size_negative": (cfg(hidden_size=-32), {}, r"hidden_size must be .*got -32"),
    "hidden_size_zero": (cfg(hidden_size=0), {}, r"hidden_size must be .*got 0"),
    "hidden_size_bool": (cfg(hidden_size=True), {}, r"hidden_size must be .*got True \(bool\)"),
    "hidden_size_float": (cfg(hidden_size=32.5), {}, r"hidden_size must be .*got 32\.5"),
    "hidden_size_string": (cfg(hidden_size="32"), {}, r"hidden_size must be .*got '32' \(str\)"),
    "vocab_size_2_64": (cfg(vocab_size=BIG), {}, rf"vocab_size must be .*got {BIG}"),
    "layers_1e8": (cfg(num_hidden_layers=10 ** 8), {},
                   r"num_hidden_layers must be .*got 100000000"),
    "layers_1e8_float": (cfg(num_hidden_layers=1e8), {},
                         r"num_hidden_layers must be .*got 100000000\.0"),
    "experts_1e8": (cfg(n_routed_experts=10 ** 8), {},
                    r"n_routed_experts must be .*got 100000000"),
    "max_pos_1e10": (cfg(max_position_embeddings=10 ** 10), {},
                     r"max_position_embeddings must be .*got 10000000000"),
    "max_pos_3e8": (cfg(max_position_embeddings=3 * 10 ** 8), {},
                    r"max_position_embeddings must be .*got 300000000"),
    "huge_int_digits": (raw_config(b'{"model_type": "deepseek_v2", "hidden_size": '
                                   + b"9" * 5000 + b"}"), {}, r"config\.json: not valid JSON"),
    "rope_theta_negative": (cfg(rope_theta=-1, rope_parameters=None), {},
                            r"rope_theta must be .*got -1"),
    "rope_theta_10_400": (rope(rope_theta=10 ** 400), {}, r"rope_theta must be .*got 1000000"),
    "routed_scaling_10_400": (cfg(routed_scaling_factor=10 ** 400), {},
                              r"routed_scaling_factor must be .*got 1000000"),
    "yarn_factor_10_400": (rope(factor=10 ** 400), {}, r"rope_scaling\.factor must .*got 1000"),
    "rope_theta_one": (rope(rope_theta=1.0), {}, r"rope_theta must be .*got 1\.0"),
    "rope_theta_string": (cfg(rope_parameters={"rope_type": "default", "rope_theta": "abc"}),
                          {}, r"rope_theta must be .*got 'abc' \(str\)"),
    "rope_parameters_string": (cfg(rope_parameters="yarn"), {},
                               r"rope_parameters must be an object or null, got 'yarn'"),
    "yarn_factor_negative": (rope(factor=-2.0), {}, r"rope_scaling\.factor must .*got -2\.0"),
    "yarn_factor_nan": (rope(factor=math.nan), {}, r"rope_scaling\.factor must .*got nan"),
    "yarn_missing_orig": (rope(original_max_position_embeddings=DELETE), {},
                          r"original_max_position_embeddings"),
    "yarn_orig_float": (rope(original_max_position_embeddings=32.5), {},
                        r"rope_scaling\.original_max_position_embeddings must .*got 32\.5"),
    "yarn_beta_string": (rope(beta_fast="x"), {}, r"rope_scaling\.beta_fast must .*got 'x'"),
    "yarn_beta_negative": (rope(beta_slow=-1.0), {}, r"rope_scaling\.beta_slow .*got -1\.0"),
    "yarn_mscale_negative": (rope(mscale_all_dim=-100.0), {},
                             r"rope_scaling\.mscale_all_dim .*got -100\.0"),
    "yarn_unknown_type": (rope(rope_type="dynamic"), {}, r"rope scaling 'dynamic'"),
    "routed_scaling_nan": (cfg(routed_scaling_factor=math.nan), {},
                           r"routed_scaling_factor must be .*got nan"),
    "routed_scaling_inf": (cfg(routed_scaling_factor=math.inf), {},
                           r"routed_scaling_factor must be .*got inf"),
    "rms_norm_eps_string": (cfg(rms_norm_eps="abc"), {},
                            r"rms_norm_eps must be .*got 'abc' \(str\)"),
    "rms_norm_eps_negative": (cfg(rms_norm_eps=-1e-6), {}, r"rms_norm_eps must .*got -1e-06"),
    "rope_head_dim_odd": (cfg(qk_rope_head_dim=5), {}, r"qk_rope_head_dim 5 must be even"),
    "experts_per_tok_zero": (cfg(num_experts_per_tok=0), {},
                             r"num_experts_per_tok must be .*got 0"),
    "n_group_not_dividing": (cfg(n_group=3), {}, r"n_routed_experts 8 .* n_group 3"),
    "topk_method_number": (cfg(topk_method=7), {}, r"topk_method must be one of .*got 7"),
    "tie_embeddings_string": (cfg(tie_word_embeddings="yes"), {},
                              r"tie_word_embeddings must be true or false, got 'yes'"),
    "eos_negative": (cfg(eos_token_id=[-1]), {}, r"eos_token_id must be .*got -1"),
    "eos_string": (cfg(eos_token_id="</s>"), {}, r"eos_token_id must be .*got '</s>'"),
    "hidden_act": (cfg(hidden_act="gelu"), {}, r"hidden_act 'gelu'"),
    "attention_bias": (cfg(attention_bias=True), {}, r"attention_bias=True"),
    "model_type_list": (cfg(model_type=["llama"]), {}, r"model_type \['llama'\]"),
    "layers_times_experts": (cfg(num_hidden_layers=4096, n_routed_experts=65536, n_group=4,
                                 hidden_size=8), {},
                             r"num_hidden_layers 4096 with n_routed_experts 65536 means "
                             r"805,109,760 expert tensors"),
    "implied_bytes_huge": (cfg(vocab_size=16 * 2 ** 20, hidden_size=65536), {},
                           r"the checkpoint's [\d,]+ parameters take .* GiB \([\d,]+ bytes\)"
                           r" as float32.*max_bytes"),
    "max_bytes_below": (lambda d: None, {"max_bytes": 1000},
                        r"parameters take .* as float32, over the limit of 1,000 bytes.*"
                        r"max_bytes=N\) raises"),
    "dtype_argument": (lambda d: None, {"dtype": "int8"}, r"dtype 'int8' is not one of"),
    # config.json: the file itself
    "config_not_json": (raw_config(b"{not json"), {}, r"config\.json: not valid JSON"),
    "config_not_utf8": (raw_config(b'{"a": "\xff\xfe"}'), {}, r"config\.json: not valid JSON"),
    "config_list": (raw_config(b"[1, 2]"), {}, r"config\.json: not a JSON object"),
    "config_nested": (raw_config(nested(100000)), {}, r"config\.json: JSON nested 100001 deep"),
    "config_duplicate_key": (raw_config(b'{"hidden_size": 32, "hidden_size": 64}'), {},
                             r"config\.json: duplicate name 'hidden_size'"),
    "config_1gb": (sparse("config.json", 2 ** 30, b"{"), {},
                   r"config\.json: config\.json is larger than 16,777,216 bytes"),
    "config_fifo": (fifo("config.json"), {}, r"config\.json: config 'config\.json' is not a "
                                             r"regular file"),
    "config_symlink_out": (symlink_out("config.json", copy_to), {},
                           r"config 'config\.json' resolves to .*outside the checkpoint"),
    # safetensors headers
    "header_nested": (lambda d: join(d / ST, nested(100000), b""), {},
                      r"model\.safetensors: header: JSON nested 100001 deep"),
    "header_not_object": (lambda d: join(d / ST, b"[1, 2, 3]", b""), {},
                          r"model\.safetensors: not a safetensors file \(header is not a JSON"),
    "header_not_json": (lambda d: join(d / ST, b"{abc", b""), {},
                        r"model\.safetensors: header: not valid JSON"),
    "header_not_utf8": (lambda d: join(d / ST, b'{"\xff": 1}', b""), {},
                        r"model\.safetensors: header: not valid JSON"),
    "header_len_past_eof": (lambda d: join(d / ST, b"{}", b"", length=10 ** 6), {},
                            r"header length 1,000,000 does not fit a 10-byte file"),
    "header_len_2_64": (lambda d: join(d / ST, b"{}", b"", length=BIG - 1), {},
                        r"header length 18,446,744,073,709,551,615"),
    "header_over_limit": (sparse(ST, 10 ** 8, struct.pack("<Q", 50 * 2 ** 20) + b"{"), {},
                          r"header length 52,428,800 is over the 33,554,432-byte limit"),
    "file_too_short": (lambda d: (d / ST).write_bytes(b"\x01\x02"), {},
                       r"model\.safetensors: not a safetensors file \(shorter than 8 bytes\)"),
    "duplicate_tensor": (header_text(lambda t: t.replace(
        '"model.norm.weight"', '"model.norm.weight": {"dtype": "F32", "shape": [32], '
        '"data_offsets": [0, 128]}, "model.norm.weight"', 1)), {},
        r"duplicate name 'model\.norm\.weight'"),
    "dim_2_64": (set_entry("model.norm.weight", "shape", [BIG]), {},
                 rf"tensor 'model\.norm\.weight' has shape \[{BIG}\]"),
    "dim_negative": (set_entry("model.norm.weight", "shape", [-32]), {},
                     r"tensor 'model\.norm\.weight' has shape \[-32\]"),
    "dim_string": (set_entry("model.norm.weight", "shape", ["32"]), {},
                   r"tensor 'model\.norm\.weight' has shape \['32'\]"),
    "dim_bool": (set_entry("model.norm.weight", "shape", [True, 32]), {},
                 r"tensor 'model\.norm\.weight' has shape \[True, 32\]"),
    "dim_float": (set_entry("model.norm.weight", "shape", [32.0]), {},
                  r"tensor 'model\.norm\.weight' has shape \[32\.0\]"),
    "shape_not_list": (set_entry("model.norm.weight", "shape", {"a": 1}), {},
                       r"tensor 'model\.norm\.weight' has shape \{'a': 1\}"),
    "dtype_unknown": (set_entry("model.norm.weight", "dtype", "F8_XYZ"), {},
                      r"tensor 'model\.norm\.weight' has unsupported dtype 'F8_XYZ'"),
    "dtype_list": (set_entry("model.norm.weight", "dtype", ["F32"]), {},
                   r"tensor 'model\.norm\.weight' has unsupported dtype \['F32'\]"),
    "dtype_int": (set_entry("model.norm.weight", "dtype", "I32"), {},
                  r"tensor 'model\.norm\.weight' has dtype I32; expected a float"),
    "offsets_reversed": (header(lambda h: h["model.norm.weight"].__setitem__(
        "data_offsets", h["model.norm.weight"]["data_offsets"][::-1])), {},
        r"tensor 'model\.norm\.weight' .* has data offsets \[\d+, \d+\]"),
    "offsets_past_eof": (header(lambda h: h["model.norm.weight"].__setitem__(
        "data_offsets", [10 ** 9, 10 ** 9 + 128])), {},
        r"tensor 'model\.norm\.weight' .* data offsets \[1000000000, 1000000128\]"),
    "offsets_2_64": (set_entry("model.norm.weight", "data_offsets", [BIG, BIG + 128]), {},
                     rf"tensor 'model\.norm\.weight' .* data offsets \[{BIG}, {BIG + 128}\]"),
    "offsets_negative": (set_entry("model.norm.weight", "data_offsets", [-128, 0]), {},
                         r"tensor 'model\.norm\.weight' .* data offsets \[-128, 0\]"),
    "offsets_strings": (set_entry("model.norm.weight", "data_offsets", ["0", "128"]), {},
                        r"tensor 'model\.norm\.weight' has data_offsets \['0', '128'\]"),
    "offsets_three": (set_entry("model.norm.weight", "data_offsets", [0, 64, 128]), {},
                      r"tensor 'model\.norm\.weight' has data_offsets \[0, 64, 128\]"),
    "overlap": (overlap, {}, r"tensor 'model\.layers\.0\.(input|post_attention)_layernorm"
                             r"\.weight' .* overlaps tensor 'model\.layers\.0\."),
    "trailing_bytes": (lambda d: (d / ST).write_bytes((d / ST).read_bytes() + b"\0" * 64),
                       {}, r"64 bytes after the last tensor's data"),
    "entry_not_object": (header(lambda h: h.__setitem__("model.norm.weight", 5)), {},
                         r"tensor 'model\.norm\.weight' has a malformed header entry 5"),
    "entry_extra_key": (set_entry("model.norm.weight", "eval", "__import__('os')"), {},
                        r"tensor 'model\.norm\.weight' has a malformed header entry"),
    "metadata_not_strings": (header(lambda h: h.__setitem__("__metadata__", {"a": [1]})), {},
                             r"__metadata__ \{'a': \[1\]\} is not an object of strings"),
    "too_many_entries": (header(lambda h: h.update(
        {f"pad.{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
         for i in range(40)})), {"_limit": 16},
        r"header: [\d,]+ JSON objects/arrays and [\d,]+ values, over the limit of 50 and 192"),
    "header_of_tiny_values": (lambda d: join(d / ST, b'{"x": [' + b"0," * (2 ** 23 - 4)
                                             + b"0]}", b""), {},
                              r"header: 2 JSON objects/arrays and 8,388,605 values, over the "
                              r"limit"),
    "config_of_tiny_values": (raw_config(b'{"x": [' + b'"",' * (2 ** 22) + b'""]}'), {},
                              r"config\.json: 2 JSON objects/arrays and 4,194,305 values"),
    "weights_fifo": (fifo(ST), {}, r"safetensors file 'model\.safetensors' is not a regular"),
    "weights_dir": (lambda d: ((d / ST).unlink(), (d / ST).mkdir()), {},
                    r"'model\.safetensors' is not a regular file"),
    "weights_symlink_out": (symlink_out(ST, copy_to), {},
                            r"safetensors file 'model\.safetensors' resolves to .*outside"),
    "weights_symlink_dev_zero": (lambda d: ((d / ST).unlink(), (d / ST).symlink_to(
        "/dev/zero")), {}, r"'model\.safetensors' resolves to '/dev/zero', outside"),
    "pickle_only": (lambda d: ((d / ST).unlink(), (d / "pytorch_model.bin").write_bytes(
        b"\x80\x02cos\nsystem\n")), {}, r"pickle checkpoints are never loaded"),
    "name_too_long": (header(lambda h: h.__setitem__("x" * 5000, h.pop("model.norm.weight"))),
                      {}, r"tensor 'xxxx+\.\.\.: name longer than 1024 characters"),
    "layers_zero": (cfg(num_hidden_layers=0), {}, r"num_hidden_layers must be .*got 0"),
    "rope_scaling_list": (cfg(rope_parameters=None, rope_scaling=["yarn", 4.0]), {},
                          r"rope_scaling must be an object or null, got \['yarn', 4\.0\]"),
    "config_dangling_symlink": (lambda d: ((d / "config.json").unlink(), (
        d / "config.json").symlink_to(d / "nowhere.json")), {},
        r"config 'config\.json' is missing"),
    # the shard index
    "index_outside": (index(moved), {},
                      r"shard listed in model\.safetensors\.index\.json, '\.\./elsewhere/"
                      r"model-00001-of-00002\.safetensors' is outside the checkpoint"),
    "index_absolute": (index(lambda f, d: {**f, "model.norm.weight": "/etc/passwd"}), {},
                       r"'/etc/passwd' is outside the checkpoint directory"),
    "index_not_string": (index(lambda f, d: {**f, "model.norm.weight": 7}), {},
                         r"weight_map\['model\.norm\.weight'\] is 7, not a file name"),
    "index_not_json": (index(lambda f, d: "{weight"), {},
                       r"model\.safetensors\.index\.json: not valid JSON"),
    "index_no_weight_map": (index(lambda f, d: json.dumps({"metadata": {}})), {},
                            r"index\.json: not a safetensors index \(no 'weight_map'"),
    "index_nested": (index(lambda f, d: nested(5000).decode()), {},
                     r"index\.json: JSON nested 5001 deep"),
    "index_missing_shard": (index(lambda f, d: {**f, "model.norm.weight": "gone.safetensors"}),
                            {}, r"'gone\.safetensors' is missing"),
    "index_wrong_file": (index(lambda f, d: {**f, "model.norm.weight": (
        "model-00001-of-00002.safetensors" if f["model.norm.weight"].startswith("model-00002")
        else "model-00002-of-00002.safetensors")}), {},
        r"tensor 'model\.norm\.weight' is in .*, the index says"),
    "index_extra_name": (index(lambda f, d: {**f, "model.ghost.weight":
                                             "model-00001-of-00002.safetensors"}), {},
                         r"tensor 'model\.ghost\.weight' is listed in the index"),
    "index_symlink_out": (lambda d: (index(lambda f, _: f)(d), symlink_out(
        "model.safetensors.index.json", copy_to)(d)), {},
        r"index 'model\.safetensors\.index\.json' resolves to .*outside the checkpoint"),
    # weights
    "nan_weight": (poke("model.norm.weight", math.nan, index=3), {},
                   r"tensor 'model\.norm\.weight' in model\.safetensors has non-finite values "
                   r"\(1 NaN, 0 infinite.*at flat index 3\).*allow_nonfinite=True"),
    "inf_weight": (poke("model.layers.1.mlp.experts.5.down_proj.weight", -math.inf, index=7),
                   {}, r"tensor 'model\.layers\.1\.mlp\.experts\.5\.down_proj\.weight' .*"
                       r"\(0 NaN, 1 infinite.*-inf, at flat index 7\)"),
}


def load_case(base, tmp_path, monkeypatch, case):
    edit, kw, pattern = CASES[case]
    kw = dict(kw)
    if "_limit" in kw:
        monkeypatch.setattr(sio, "MAX_TENSORS_PER_FILE", kw.pop("_limit"))
    d = tmp_path / "ckpt"
    shutil.copytree(base, d)
    edit(d)
    tracemalloc.start()
    try:
        with pytest.raises(graphc.CheckpointError, match=pattern) as info:
            dv.load(d, **kw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert type(info.value) is graphc.CheckpointError
    assert info.value.__cause__ is None      # a message of graphc's, not a wrapped crash
    assert peak < PEAK_LIMIT, f"{case}: {peak:,} bytes allocated before refusing"
    return info.value


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_checkpoint_is_a_checkpoint_error(base, tmp_path, monkeypatch, case):
    load_case(base, tmp_path, monkeypatch, case)


def test_base_checkpoint_loads(base, model):
    loaded = dv.load(base)
    assert loaded.config == model.config
    for k, a in model.params.items():
        np.testing.assert_array_equal(loaded.params[k], a, err_msg=k)


def test_allow_nonfinite_loads_nan_and_inf(base, model, tmp_path):
    d = tmp_path / "ckpt"
    shutil.copytree(base, d)
    poke("model.norm.weight", math.nan, index=3)(d)
    poke("model.layers.0.self_attn.o_proj.weight", math.inf, index=0)(d)
    with pytest.raises(graphc.CheckpointError, match=r"'model\.layers\.0\.self_attn\.o_proj"
                                                     r"\.weight'|'model\.norm\.weight'"):
        dv.load(d)
    loaded = dv.load(d, allow_nonfinite=True)
    assert np.isnan(loaded.params["model.norm.weight"][3])
    assert np.isposinf(loaded.params["model.layers.0.self_attn.o_proj.weight"].reshape(-1)[0])
    want = model.params["model.norm.weight"].copy()
    want[3] = loaded.params["model.norm.weight"][3]
    np.testing.assert_array_equal(loaded.params["model.norm.weight"], want)


def test_float64_weight_overflowing_float32_is_nonfinite(model, tmp_path):
    """A finite float64 weight of 1e300 becomes inf as float32: refused as float32 (after
    the conversion the model would use), loaded as float64."""
    d = write_checkpoint(model, tmp_path / "f64")
    t = {k: a.astype(np.float64) for k, a in hf_tensors(model).items()}
    t["model.norm.weight"][0] = 1e300
    sio.write_file(d / ST, t)
    with pytest.raises(graphc.CheckpointError, match=r"'model\.norm\.weight'.*1 infinite, "
                                                     r"as float32"):
        dv.load(d)
    assert dv.load(d, dtype="float64").params["model.norm.weight"][0] == 1e300


@pytest.mark.parametrize("case", ["nan_weight", "inf_weight", "overlap", "dim_2_64"])
def test_hostile_without_the_safetensors_package(base, tmp_path, monkeypatch, case):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    load_case(base, tmp_path, monkeypatch, case)


def test_bf16_nan_is_refused(model, tmp_path, monkeypatch):
    d = write_checkpoint(model, tmp_path / "bf16", bf16=True)
    poke("model.norm.weight", 0x7FC0, fmt="<H", index=1)(d)      # bfloat16 quiet NaN
    with pytest.raises(graphc.CheckpointError, match=r"'model\.norm\.weight'.*1 NaN"):
        dv.load(d)
    assert np.isnan(dv.load(d, allow_nonfinite=True).params["model.norm.weight"][1])


def test_max_bytes_raises_the_limit(base, monkeypatch):
    """The implied size is refused before any read when over the memory available; the
    message gives the number and max_bytes=N (or check_memory=False) loads anyway."""
    n = sum(a.size for a in dv.load(base).params.values())
    monkeypatch.setattr(ck, "available_memory", lambda: 100)
    read = []
    real = ck.read_tensor
    monkeypatch.setattr(ck, "read_tensor", lambda info: read.append(info) or real(info))
    with pytest.raises(graphc.CheckpointError, match=rf"{n:,} parameters take .*\({4 * n:,} "
                                                     r"bytes\) as float32.*max_bytes=N"):
        dv.load(base)
    assert read == []
    assert dv.load(base, max_bytes=4 * n).params
    with pytest.raises(graphc.CheckpointError, match=rf"over the limit of {4 * n - 1:,}"):
        dv.load(base, max_bytes=4 * n - 1)
    monkeypatch.setattr(ck, "available_memory", lambda: None)       # unknown: 1 TiB ceiling
    monkeypatch.setattr(ck, "DEFAULT_MAX_BYTES", 4 * n - 1)
    with pytest.raises(graphc.CheckpointError, match=r"over the limit.*max_bytes=N"):
        dv.load(base)
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(graphc.CheckpointError, match="max_bytes"):
            dv.load(base, max_bytes=bad)


def test_symlinks_inside_and_hub_cache_layout_load(base, model, tmp_path):
    """Symlinks that stay inside the directory load, and so does the Hugging Face hub
    cache (snapshots/<rev>/<file> -> ../../blobs/<hash>)."""
    d = tmp_path / "inside"
    shutil.copytree(base, d)
    (d / "real").mkdir()
    os.replace(d / ST, d / "real" / "w.bin")
    (d / ST).symlink_to(d / "real" / "w.bin")
    assert dv.load(d).config == model.config
    repo = tmp_path / "models--x--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for fn in ("config.json", ST):
        shutil.copy(base / fn, repo / "blobs" / ("h-" + fn))
        (snap / fn).symlink_to(os.path.join("..", "..", "blobs", "h-" + fn))
    loaded = dv.load(snap)
    np.testing.assert_array_equal(loaded.params["model.norm.weight"],
                                  model.params["model.norm.weight"])


def test_header_edits_keep_a_valid_file_valid(base, tmp_path):
    """The edit helpers themselves: an identity edit still loads (so each case breaks only
    what it says)."""
    d = tmp_path / "ckpt"
    shutil.copytree(base, d)
    header(lambda h: None)(d)
    cfg()(d)
    assert dv.load(d).params


def _depth_reference(text: str) -> int:
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if esc:
            esc = False
            if ch in '"\\':
                continue
        elif ch == "\\":
            esc = True
            continue
        if in_str:
            in_str = ch != '"'
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def test_json_depth_matches_a_scanner(rng):
    """The vectorised depth scan (strings and escapes skipped, state carried across
    chunks) against a character-by-character scanner."""
    alphabet = list('[]{}"\\ab')
    for _ in range(400):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 40))))
        want = _depth_reference(text)
        for chunk in (1, 2, 3, 7, 1 << 20):
            assert sio.json_depth(text.encode(), chunk=chunk) == want, (text, chunk)
    meta = json.dumps({"a": {"b": [1]}, "m": json.dumps({"x": [[[[[[[[[1]]]]]]]]]})})
    assert sio.json_depth(meta.encode()) == 3       # brackets inside strings do not count


@pytest.mark.parametrize("package", [True, False])
def test_write_file_reads_back(tmp_path, monkeypatch, package):
    if not package:          # the header parser and memory map of safetensors_io alone
        monkeypatch.setitem(sys.modules, "safetensors", None)
    t = {"s": np.array(2.5, np.float32), "a": np.arange(6, dtype=np.float32).reshape(2, 3),
         "b": np.array([1.5], np.float64),
         "c": np.zeros((0, 4), np.float16), "d": np.array([-3], np.int64)}
    sio.write_file(tmp_path / "x.safetensors", t, {"k": "v"})
    infos = sio.read_header(str(tmp_path / "x.safetensors"))
    assert sorted(infos) == sorted(t)
    for k, a in t.items():
        got = sio.read_tensor(infos[k])
        assert got.dtype == a.dtype and got.shape == a.shape
        np.testing.assert_array_equal(got, a)


# -- the same cases on a real transformers save_pretrained directory ---------------------------

@pytest.fixture(scope="module")
def hf_base(tmp_path_factory):
    torch = pytest.importorskip("torch", reason="needs the 'compare' extra (torch)")
    transformers = pytest.importorskip("transformers", minversion="5.15",
                                       reason="needs the 'compare' extra (transformers)")
    cfg = transformers.DeepseekV2Config(
        vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=4, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
        qk_rope_head_dim=4, v_head_dim=6, n_routed_experts=8, n_shared_experts=1,
        num_experts_per_tok=3, moe_intermediate_size=12, first_k_dense_replace=1,
        topk_method="group_limited_greedy", n_group=4, topk_group=2,
        routed_scaling_factor=16.0, max_position_embeddings=128)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("hf") / "ckpt"
    transformers.DeepseekV2ForCausalLM(cfg).save_pretrained(d)
    dv.load(d)                                   # the base is valid
    return d


HF_CASES = [c for c in CASES if c not in ("n_group_not_dividing", "too_many_entries")]


@pytest.mark.compare
@pytest.mark.parametrize("case", HF_CASES)
def test_hostile_save_pretrained_checkpoint(hf_base, tmp_path, monkeypatch, case):
    load_case(hf_base, tmp_path, monkeypatch, case)


# -- every config field with every kind of wrong value -------------------------------------

ODD_VALUES = [None, True, False, 0, -1, 1, 2, 3, 7, 2 ** 31, 2 ** 64, 10 ** 400, 0.5, -0.0,
              1e308, math.nan, math.inf, -math.inf, "", "abc", "32", [], [1], {}, {"a": 1}]


def test_every_config_field_with_odd_values_is_accepted_or_a_checkpoint_error(model):
    """Each field of a valid config.json (and each YaRN field) set to each odd value: the
    config is either refused with a CheckpointError naming the field, or accepted and then
    usable (the RoPE tables, the parameter shapes and sizes compute without an error)."""
    good = {"model_type": "deepseek_v2", **model.config.to_hf()}
    fields = [(k, None) for k in good if k != "rope_parameters"]
    fields += [("rope_parameters", k) for k in good["rope_parameters"]]
    fields += [("eos_token_id", None), ("rope_scaling", None)]
    for field, sub in fields:
        for v in ODD_VALUES:
            d = json.loads(json.dumps(good))
            if sub is None:
                d[field] = v
            else:
                d[field][sub] = v
            try:
                c = dv.DeepseekV2Config.from_hf(d, require_shapes=True)
            except graphc.CheckpointError as e:
                assert (sub or field) in str(e) or "rope" in str(e), (field, sub, v, str(e))
                continue
            dv.rope_tables(c)
            ck.implied_size(c)
            dv.cache_bytes_per_token(c)


def test_random_header_bytes_are_loaded_or_a_checkpoint_error(base, tmp_path, rng):
    """Random bytes of the safetensors header (and its length) overwritten with random
    or structural characters: every outcome is a load or a CheckpointError."""
    raw = (base / ST).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    alphabet = np.frombuffer(b'{}[]",:0123456789-.eE \\\xff\x00aF', np.uint8)
    d = tmp_path / "ckpt"
    shutil.copytree(base, d)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(60):
        b = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, 8 + n))
            b[at] = int(rng.choice(alphabet)) if rng.random() < 0.8 else int(rng.integers(256))
        (d / ST).write_bytes(bytes(b))
        try:
            dv.load(d)
            outcomes["loaded"] += 1
        except graphc.CheckpointError as e:
            assert e.__cause__ is None
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0
