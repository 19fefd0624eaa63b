"""A PyTorch model named on the command line: ``module:callable`` (``mypkg.models:make``)
or ``path/to/file.py:callable``, where the callable takes no arguments and returns
``(model, example_args)`` or ``(model, example_args, dynamic_shapes)``; example_args may
end in a dict of keyword arguments (``(model, (ids,), None, {"attention_mask": m})`` is
also accepted as a 4-tuple). ``load_target`` imports it; every mistake is a
``TorchTargetError`` naming the target and what is wrong, never a raw traceback."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field

from .errors import TorchImportError

FORM = ("MODULE:CALLABLE or FILE.py:CALLABLE, a callable returning (model, example_args) "
        "or (model, example_args, dynamic_shapes)")


class TorchTargetError(TorchImportError):
    """A ``module:callable`` target that cannot be imported or returns the wrong thing."""


@dataclass
class TorchTarget:
    text: str
    model: object
    args: tuple
    dynamic_shapes: object = None
    kwargs: dict = field(default_factory=dict)


def looks_like_target(text: str) -> bool:
    """``a.b:c`` or ``file.py:c`` (a colon, an identifier after it)."""
    head, colon, attr = text.rpartition(":")
    return bool(colon and head and attr.replace(".", "_").isidentifier())


def _user_frame(e: BaseException) -> str:
    """' (at file.py:7: line)' for the innermost frame of the user's code, if any."""
    frames = traceback.extract_tb(e.__traceback__)
    mine = os.path.dirname(os.path.abspath(__file__))
    user = [f for f in frames if not os.path.abspath(f.filename).startswith(mine)
            and "importlib" not in f.filename]
    if not user:
        return ""
    f = user[-1]
    return f" (at {f.filename}:{f.lineno}: {(f.line or '').strip()})"


def _import(text: str, head: str):
    if head.endswith(".py") or os.sep in head or "/" in head:
        path = os.path.abspath(head)
        if not os.path.isfile(path):
            raise TorchTargetError(f"{text}: no such file {head!r} (expected {FORM})")
        name = f"graphc_target_{abs(hash(path))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise TorchTargetError(f"{text}: {head!r} is not a Python file")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
            return mod
        except Exception as e:
            sys.modules.pop(name, None)
            raise TorchTargetError(f"{text}: importing {head} failed: {type(e).__name__}: "
                                   f"{e}{_user_frame(e)}") from None
    if not all(p.isidentifier() for p in head.split(".")):
        raise TorchTargetError(f"{text}: {head!r} is neither a module name nor a .py file "
                               f"(expected {FORM})")
    try:
        return importlib.import_module(head)
    except ModuleNotFoundError as e:
        if e.name and (head == e.name or head.startswith(e.name + ".")):
            raise TorchTargetError(f"{text}: no module named {e.name!r} (on sys.path, which "
                                   f"starts with the current directory; or give a file: "
                                   f"path/to/file.py:callable)") from None
        raise TorchTargetError(f"{text}: importing {head} failed: ModuleNotFoundError: "
                               f"{e}{_user_frame(e)}") from None
    except Exception as e:
        raise TorchTargetError(f"{text}: importing {head} failed: {type(e).__name__}: "
                               f"{e}{_user_frame(e)}") from None


def load_target(text: str) -> TorchTarget:
    """Import ``module:callable`` / ``file.py:callable``, call it, check what it returns."""
    head, colon, attr = text.rpartition(":")
    if not colon or not head or not attr:
        raise TorchTargetError(f"{text!r} is not a PyTorch target: expected {FORM}")
    if importlib.util.find_spec("torch") is None:
        raise TorchTargetError(f"{text}: a PyTorch target needs torch, which is not "
                               f"installed (pip install 'graphc[compare]' or pip install "
                               f"torch)")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())       # like python -m: modules of the current dir
    mod = _import(text, head)
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(mod) if not n.startswith("_")
                           and callable(getattr(mod, n, None)))[:12]
            raise TorchTargetError(f"{text}: {head} has no attribute {attr!r} (its "
                                   f"callables: {', '.join(names) or 'none'})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TorchTargetError(f"{text}: {attr} is a {type(obj).__name__}, not a callable "
                               f"(expected {FORM})")
    try:
        got = obj()
    except Exception as e:
        raise TorchTargetError(f"{text}: calling {attr}() failed: {type(e).__name__}: "
                               f"{e}{_user_frame(e)}") from None
    return check_result(text, attr, got)


def check_result(text: str, attr: str, got) -> TorchTarget:
    import torch
    want = f"{attr}() must return (model, example_args) or (model, example_args, " \
           f"dynamic_shapes)"
    if not isinstance(got, (tuple, list)) or not 2 <= len(got) <= 4:
        what = f"a {len(got)}-tuple" if isinstance(got, (tuple, list)) else \
            f"a {type(got).__name__}"
        raise TorchTargetError(f"{text}: {want}; it returned {what}")
    model, args = got[0], got[1]
    dyn = got[2] if len(got) > 2 else None
    kwargs = got[3] if len(got) > 3 else {}
    if not isinstance(model, torch.nn.Module):
        raise TorchTargetError(f"{text}: {want}; its model is a {type(model).__name__}, not "
                               f"a torch.nn.Module")
    if isinstance(args, torch.Tensor):
        args = (args,)
    if not isinstance(args, (tuple, list)):
        raise TorchTargetError(f"{text}: {want}; its example_args is a "
                               f"{type(args).__name__}, not a tuple of tensors")
    if not isinstance(kwargs, dict):
        raise TorchTargetError(f"{text}: its 4th item (keyword arguments) is a "
                               f"{type(kwargs).__name__}, not a dict")
    leaves = [a for a in torch.utils._pytree.tree_leaves((tuple(args), kwargs))
              if isinstance(a, torch.Tensor)]
    if not leaves:
        raise TorchTargetError(f"{text}: {want}; its example_args hold no tensor")
    return TorchTarget(text, model.eval(), tuple(args), dyn, dict(kwargs))


def tensor_leaves(target: TorchTarget) -> list:
    """The example tensors in the graph's input order (args, then kwargs)."""
    import torch
    return [a for a in torch.utils._pytree.tree_leaves((target.args, target.kwargs))
            if isinstance(a, torch.Tensor)]


def with_tensors(target: TorchTarget, tensors) -> tuple[tuple, dict]:
    """(args, kwargs) of the target with its tensors replaced, in order, by ``tensors``."""
    import torch
    leaves, spec = torch.utils._pytree.tree_flatten((target.args, target.kwargs))
    it = iter(tensors)
    leaves = [next(it) if isinstance(a, torch.Tensor) else a for a in leaves]
    args, kwargs = torch.utils._pytree.tree_unflatten(leaves, spec)
    return tuple(args), dict(kwargs)


def eager_call(target: TorchTarget, arrays):
    """A call of the model itself (eager torch, no_grad) on these NumPy arrays (shared, not
    copied), returning its output tensors as arrays (pytree order, as torch.export's)."""
    import numpy as np
    import torch
    args, kwargs = with_tensors(target, [torch.from_numpy(np.ascontiguousarray(a))
                                         for a in arrays])

    def call():
        with torch.no_grad():
            out = target.model(*args, **kwargs)
        return tuple(t.detach().cpu().numpy() for t in torch.utils._pytree.tree_leaves(out)
                     if isinstance(t, torch.Tensor))
    return call
