"""Call-time checks of input arrays against a graph's input specs."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError, SymbolError
from ..ir.dims import Sym


def bind_inputs(graph, arrays: Sequence, loc=None,
                array_types=(np.ndarray,)) -> dict[str, int]:
    """Check ``arrays`` against the graph's inputs and return the symbol bindings.

    ``array_types`` are the array classes the executable takes (a GPU backend adds its
    device arrays). Raises :class:`InputError` (wrong count, type, dtype, rank or fixed dim) or
    :class:`SymbolError` (one symbol bound to two sizes) naming the input and ``loc``.
    """
    names = graph.input_names
    types = graph.input_types
    if len(arrays) != len(types):
        sig = ", ".join(f"{n}: {t}" for n, t in zip(names, types))
        raise InputError(f"{graph.name} expects {len(types)} input arrays ({sig}), "
                         f"got {len(arrays)}", loc=loc)
    bindings: dict[str, int] = {}
    where: dict[str, str] = {}
    for k, (name, t, a) in enumerate(zip(names, types, arrays)):
        if not isinstance(a, array_types):
            kinds = " or ".join(("NumPy" if c is np.ndarray else c.__module__.split(".")[0]
                                 .replace("cupy", "CuPy")) for c in array_types)
            raise InputError(f"input {k} '{name}' must be a {kinds} array of {t}, got "
                             f"{type(a).__name__}", loc=loc)
        if a.dtype != t.np_dtype:
            raise InputError(f"input {k} '{name}' expects {t} but got an array of dtype "
                             f"{a.dtype} and shape {a.shape}; convert with "
                             f".astype(np.{t.dtype})", loc=loc)
        if a.ndim != t.rank:
            raise InputError(f"input {k} '{name}' expects rank {t.rank} ({t}) but got shape "
                             f"{a.shape}", loc=loc)
        for ax, (d, n) in enumerate(zip(t.shape, a.shape)):
            if isinstance(d, Sym):
                (sym,) = d.symbols  # input dims are plain symbols
                if sym in bindings and bindings[sym] != n:
                    raise SymbolError(
                        f"symbol {sym} is bound to two sizes: {bindings[sym]} by "
                        f"{where[sym]} and {n} by input '{name}' axis {ax} (shape {a.shape})",
                        loc=loc)
                bindings.setdefault(sym, n)
                where.setdefault(sym, f"input '{name}' axis {ax}")
            elif d != n:
                raise InputError(f"input {k} '{name}' expects {t} but got shape {a.shape}: "
                                 f"axis {ax} must be {d}", loc=loc)
    # symbols whose range the graph was built for (an importer decided max() / min() of
    # sizes by it): a size outside would compute something else
    for sym, (lo, hi) in (getattr(graph, "meta", None) or {}).get("dim_ranges", {}).items():
        n = bindings.get(sym)
        if n is not None and (n < lo or (hi is not None and n > hi)):
            raise InputError(f"{where[sym]} binds {sym} = {n}, outside the range {lo}.."
                             f"{'' if hi is None else hi} the graph was imported for (a size "
                             f"of the model, max() or min() of its dims, was decided by "
                             f"that range)", loc=loc)
    return bindings
