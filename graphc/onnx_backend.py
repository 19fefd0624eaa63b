"""``graphc.onnx_backend``: graphc as an ONNX backend (``onnx.backend.base.Backend``),
so ONNX's backend test cases (and any caller of that interface) run through graphc.

    import graphc.onnx_backend as gb
    rep = gb.prepare(model, device="CPU", backend="numba")   # default: reference
    outputs = rep.run([x, y])
    gb.run_node(node, [x, y])

The graphc backend is chosen by ``backend=`` (``"reference"``, ``"numba"``,
``"cupy-emu"``, ``"cupy"``) or by the device (``"CPU"``: reference, ``"CUDA"``: cupy).
Graph inputs whose value an op needs at import (a Reshape's shape given as an input)
are fixed from the call's arrays; the model is imported and compiled once per set of
such values (once in all for the usual model, where they are initializers)."""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from .errors import BackendError
from .frontend.onnx import NeedsValueError, from_onnx
from .frontend.onnx.dtypes import GRAPHC_OF, WIDER


def _graphc_backend(device, backend):
    if backend is not None:
        return backend
    d = Device(device) if isinstance(device, str) else device
    return "cupy" if d.type == DeviceType.CUDA else "reference"


class GraphcRep(BackendRep):
    """A prepared model: ``run(inputs)`` -> a tuple of output arrays (ONNX order)."""

    def __init__(self, model, backend: str, level=None, **options):
        self.model = model
        self.backend = backend
        self.level = level
        self.options = options
        init = {t.name for t in model.graph.initializer}
        self.inputs = [vi for vi in model.graph.input if vi.name not in init]
        self.output_names = [vi.name for vi in model.graph.output]
        self.output_types = [vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type")
                             else 0 for vi in model.graph.output]
        self._fixed: list[str] = []      # inputs whose values the import needs
        self._exes: dict = {}
        self.graph = None

    def _build(self, values, shapes):
        import graphc
        while True:
            try:
                g = from_onnx(self.model, values={n: values[n] for n in self._fixed},
                              _input_shapes=shapes, _widen=True)
                break
            except NeedsValueError as e:
                if e.input_name in self._fixed or e.input_name not in values:
                    raise
                self._fixed.append(e.input_name)
        exe = graphc.compile(g, backend=self.backend, level=self.level, **self.options)
        return g, exe

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            arrays = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            if len(inputs) != len(self.inputs):
                raise BackendError(f"the model takes {len(self.inputs)} inputs "
                                   f"({[vi.name for vi in self.inputs]}), got {len(inputs)}")
            arrays = {vi.name: np.asarray(a) for vi, a in zip(self.inputs, inputs)}
        shapes = {vi.name: arrays[vi.name].shape for vi in self.inputs
                  if not vi.type.tensor_type.HasField("shape")}
        key = tuple((n, arrays[n].dtype.str, arrays[n].shape, arrays[n].tobytes())
                    for n in self._fixed)
        hit = self._exes.get(key)
        if hit is None:
            known = list(self._fixed)
            hit = self._build(arrays, shapes)
            if self._fixed != known:   # the import found more inputs it needs
                key = tuple((n, arrays[n].dtype.str, arrays[n].shape, arrays[n].tobytes())
                            for n in self._fixed)
            self._exes[key] = hit
        g, exe = hit
        self.graph = g
        feeds = []
        for name, nid in zip(g.meta["onnx"]["inputs"], g.inputs):
            want = g.nodes[nid].type.np_dtype
            a = arrays[name]
            feeds.append(a.astype(want) if a.dtype != want else a)
        outs = exe(*feeds)
        if not isinstance(outs, tuple):
            outs = (outs,)
        res = []
        for o, t, gt in zip(outs, self.output_types, g.output_types):
            o = np.asarray(o)
            if gt.rank == 0 and o.shape == (1,):
                o = o.reshape(())   # the numba backend returns a 0-d constant output as [1]
            if t and t not in GRAPHC_OF and t in WIDER:
                o = o.astype(helper.tensor_dtype_to_np_dtype(t))
            res.append(o)
        Outputs = namedtuple("Outputs", [f"o{k}" for k in range(len(res))])
        return Outputs(*res)


class GraphcBackend(Backend):
    """graphc behind ONNX's backend interface."""

    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs) -> bool:
        from .frontend.onnx.importer import check_supported
        try:
            check_supported(model)
        except Exception:
            return False
        return True

    @classmethod
    def prepare(cls, model, device="CPU", backend=None, level=None, **kwargs):
        if isinstance(model, (str, bytes)):
            model = onnx.load(model) if isinstance(model, str) else \
                onnx.load_from_string(model)
        return GraphcRep(model, _graphc_backend(device, backend), level=level, **kwargs)

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        opset = kwargs.pop("opset_version", None)
        if isinstance(inputs, dict):
            named = inputs
        else:
            named = {n: a for n, a in zip([i for i in node.input if i], inputs)}
        vis = []
        for n, a in named.items():
            a = np.asarray(a)
            vis.append(helper.make_tensor_value_info(
                n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape))
        outs = []
        for k, n in enumerate(node.output):
            if not n:
                continue
            if outputs_info and k < len(outputs_info):
                dt, shape = outputs_info[k]
                outs.append(helper.make_tensor_value_info(
                    n, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape))
            else:
                outs.append(helper.make_empty_tensor_value_info(n))
        graph = helper.make_graph([node], "run_node", vis, outs)
        ops = [helper.make_opsetid(node.domain or "", opset or onnx.defs.onnx_opset_version())]
        model = helper.make_model(graph, opset_imports=ops)
        return cls.prepare(model, device, **kwargs).run([np.asarray(named[v.name])
                                                          for v in vis])

    @classmethod
    def supports_device(cls, device: str) -> bool:
        d = Device(device)
        if d.type == DeviceType.CPU:
            return True
        if d.type == DeviceType.CUDA:
            try:
                from .backends.cupy_gpu import gpu_available
                return bool(gpu_available()[0])
            except Exception:
                return False
        return False


prepare = GraphcBackend.prepare
run_model = GraphcBackend.run_model
run_node = GraphcBackend.run_node
supports_device = GraphcBackend.supports_device
is_compatible = GraphcBackend.is_compatible

__all__ = ["GraphcBackend", "GraphcRep", "prepare", "run_model", "run_node",
           "supports_device", "is_compatible"]
