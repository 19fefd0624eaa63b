"""The errors of the torch frontend (GraphcErrors; none needs torch installed).
``UnsupportedOpError`` is the ONNX frontend's (one error listing every unsupported node)."""
from __future__ import annotations

from ...errors import GraphcError
from ..onnx.errors import UnsupportedOpError  # noqa: F401  (shared: same contract)


class TorchImportError(GraphcError):
    """An exported program graphc cannot translate as given (a dtype, an argument form,
    a torch.export failure); the message names the FX node, the ATen op and the line."""


class InferenceOnlyError(TorchImportError):
    """torch.compile(backend="graphc") was handed a graph that needs autograd."""


class NonPolynomialDimError(TorchImportError):
    """A size of the graph is no polynomial of its dynamic dims (a strided convolution's
    floor division of a dynamic length): graphc's symbolic dims cannot hold it."""
