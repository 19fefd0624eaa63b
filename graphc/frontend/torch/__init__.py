"""The PyTorch frontend: ``graphc.from_torch(module, example_args, dynamic_shapes=None,
kwargs=None) -> Graph`` (torch.export, then core ATen) and the ``torch.compile`` backend
``"graphc"`` (``graphc.torch_backend(backend="numba", level="O2")`` for options).

torch is imported only when a model is imported, so ``import graphc`` never needs it.
One module per ATen op family (elementwise, movement, linalg, reduction, nn, creation,
indexing) fills the table from ATen op to translation function (table.py)."""
from __future__ import annotations

from .errors import InferenceOnlyError, TorchImportError, UnsupportedOpError  # noqa: F401


def from_torch(module, example_args, dynamic_shapes=None, kwargs=None, **kw):
    from .importer import from_torch as _from_torch
    return _from_torch(module, example_args, dynamic_shapes, kwargs, **kw)


from_torch.__doc__ = """Translate a torch.nn.Module into a graphc Graph through torch.export:
see graphc.frontend.torch.importer.from_torch and docs/torch.md."""


def torch_backend(backend: str = "numba", level: str = "O2", **options):
    """A torch.compile backend compiling each FX graph dynamo hands over with graphc:
    ``torch.compile(model, backend=graphc.torch_backend(backend="numba", level="O2"))``.
    The registered name ``"graphc"`` is this with the defaults."""
    from .dynamo import make_backend
    return make_backend(backend=backend, level=level, **options)


def supported_ops() -> list[str]:
    """The ATen ops graphc translates."""
    from .table import load_families
    return sorted(load_families())


__all__ = ["from_torch", "torch_backend", "supported_ops", "UnsupportedOpError",
           "TorchImportError", "InferenceOnlyError"]
