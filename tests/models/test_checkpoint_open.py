"""The checkpoint reader opens each file it reads without blocking and checks that what it
opened is a regular file: a FIFO swapped in after the directory was checked (a race, or a
caller passing a path directly) is a CheckpointError, never a hang."""
import os

import numpy as np
import pytest
from fifo import without_hanging

import graphc
from graphc.models import safetensors_io as sio

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


@pytest.mark.parametrize("reader", ["json", "header", "tensor"])
def test_a_fifo_is_refused_not_read(tmp_path, reader):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    info = sio.TensorInfo("w", "F32", (2,), 8, 16, str(fifo)) \
        if reader == "tensor" else None
    fn = {"json": lambda: sio.read_json_file(str(fifo), "config"),
          "header": lambda: sio.read_header(str(fifo)),
          "tensor": lambda: sio.read_tensor(info)}[reader]
    out = without_hanging(fn, fifo)
    assert isinstance(out.get("error"), graphc.CheckpointError), out
    assert "not a regular file" in str(out["error"]) and str(fifo) in str(out["error"])


def test_regular_files_still_read(tmp_path):
    a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = tmp_path / "m.safetensors"
    sio.write_file(str(path), a)
    infos = sio.read_header(str(path))
    np.testing.assert_array_equal(sio.read_tensor(infos["w"]), a["w"])
    (tmp_path / "c.json").write_text('{"a": 1}')
    assert sio.read_json_file(str(tmp_path / "c.json")) == {"a": 1}


@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_a_file_swapped_after_the_open_is_not_read(tmp_path, monkeypatch, dtype):
    """read_tensor opens the path once, checks that descriptor and reads through it: a FIFO
    swapped in for the file right after that open changes nothing (the safetensors
    package's own open of the path, used before for these dtypes, could block on it)."""
    a = {"w": np.random.default_rng().standard_normal((3, 4)).astype(dtype)}
    path = tmp_path / "m.safetensors"
    sio.write_file(str(path), a)
    info = sio.read_header(str(path))["w"]
    opened = []
    real = sio.open_regular

    def open_then_swap(p, what="file"):
        f = real(p, what)
        opened.append(p)
        os.replace(path, tmp_path / "moved")
        os.mkfifo(path)               # the path now names a FIFO nobody writes to
        return f
    monkeypatch.setattr(sio, "open_regular", open_then_swap)
    out = without_hanging(lambda: sio.read_tensor(info), str(path))
    assert "error" not in out, out.get("error")
    np.testing.assert_array_equal(out["value"], a["w"])
    assert opened == [str(path)]
