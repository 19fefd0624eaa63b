"""The errors of the ONNX frontend (all GraphcErrors; none needs onnx installed)."""
from __future__ import annotations

from ...errors import GraphcError


class UnsupportedOpError(GraphcError):
    """A model uses ops graphc cannot translate. Raised once, before anything is built,
    listing every unsupported node: op type, domain, opset, node name and count.
    ``unsupported`` holds ``(domain, op_type, opset, [node names])`` tuples."""

    def __init__(self, message: str, unsupported=(), **kw):
        super().__init__(message, **kw)
        self.unsupported = list(unsupported)


class OnnxImportError(GraphcError):
    """An ONNX node graphc cannot translate as given (an attribute value, dtype or form
    it does not support); the message names the node."""


class NeedsValueError(OnnxImportError):
    """A node needs, at import time, the value of a graph input (a Reshape's shape, a
    Slice's starts...). ``input_name`` names it; ``from_onnx(..., values={name: array})``
    fixes it (the ONNX backend does so with the arrays of the call)."""

    def __init__(self, message: str, input_name: str, **kw):
        super().__init__(message, **kw)
        self.input_name = input_name
