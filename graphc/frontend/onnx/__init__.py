"""The ONNX frontend: ``graphc.from_onnx(model_or_path, dims=None) -> Graph``.

onnx is imported only when a model is imported, so ``import graphc`` never needs it.
One module per op family (elementwise, reduction, movement, shape, nn, linalg) fills
the table from ONNX op type to translation function (table.py); ``graphc.onnx_backend``
runs ONNX's backend test cases through graphc."""
from __future__ import annotations

from .errors import NeedsValueError, OnnxImportError, UnsupportedOpError  # noqa: F401


def from_onnx(model_or_path, dims=None, **kwargs):
    from .importer import from_onnx as _from_onnx
    return _from_onnx(model_or_path, dims, **kwargs)


from_onnx.__doc__ = """Translate an ONNX model into a graphc Graph: see
graphc.frontend.onnx.importer.from_onnx and docs/onnx.md."""


def supported_ops() -> list[str]:
    """The ONNX op types (default domain) graphc translates."""
    from .table import load_families
    return sorted(load_families())


__all__ = ["from_onnx", "supported_ops", "UnsupportedOpError", "OnnxImportError",
           "NeedsValueError"]
