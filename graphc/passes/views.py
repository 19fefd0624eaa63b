"""Which movement chains read a contiguous buffer as a strided view (no copy).

A GEMM or an attention reads its operands through reshape / transpose / slice chains
(lower/program.py's ``View``). Such a chain is free only when the whole of it is one
strided view of the operand's buffer, which this module decides, for every binding of
the symbolic dims, and computes: the offset and the (size, stride) of each axis, strides
as dims (graphc/ir/dims.py). The fuse pass asks it with the symbolic shapes; the runtime
asks it again with the call's sizes and builds the view directly (``as_strided``), so a
chain whose steps are not views one by one (a reshape that merges two axes a transpose
separated, then one that splits them again: torch's MultiheadAttention export does this)
costs no copy either.

Each axis is followed as a list of *factors* (size, stride), outermost first, the way a
mixed-radix index decomposes:

* transpose permutes the axes, factors and all;
* a slice of an axis (positive step) needs its factors merged into one (contiguous:
  stride of one = stride of the next * its size); it moves the offset by start * stride
  and multiplies the stride by the step; a full slice changes nothing;
* a reshape lays all factors end to end and deals them out to the new axes by size,
  splitting a factor where a new axis ends inside it (size n = a * b, stride s: (a, b*s)
  and (b, s)) and merging neighbours that are contiguous where neither fits;
* at the end each axis must be one factor (after merging contiguous neighbours).

Unit axes have no factors. A reshape whose sizes cannot be matched symbolically (``S*T``
dealt out as ``T, S``) is taken as a copy.
"""
from __future__ import annotations

from ..ir.dims import Sym, exact_div

VIEW_CHAIN_OPS = ("reshape", "transpose", "slice")


def chain_entry(node) -> tuple:
    """A movement node as a chain entry: ("reshape", shape), ("transpose", axes) or
    ("slice", (starts, stops, steps))."""
    if node.op == "reshape":
        return ("reshape", tuple(node.type.shape))
    if node.op == "transpose":
        return ("transpose", tuple(node.attrs["axes"]))
    return ("slice", tuple(tuple(node.attrs[k]) for k in ("starts", "stops", "steps")))


def _slice_size(start, stop, step):
    n = stop - start
    if step == 1:
        return n
    if isinstance(n, Sym):
        return None
    return max(0, -(-n // step))


def chain_shape(source_shape, chain) -> tuple:
    """The shape ``source_shape`` has after ``chain``."""
    shape = tuple(source_shape)
    for op, arg in chain:
        if op == "reshape":
            shape = tuple(arg)
        elif op == "transpose":
            shape = tuple(shape[a] for a in arg)
        else:
            shape = tuple(_slice_size(s, e, st) for s, e, st in zip(*arg))
    return shape


def _merge(factors):
    """Contiguous neighbours merged: [(n1, s1), (n2, s2)] with s1 = s2 * n2 is
    [(n1 * n2, s2)]."""
    out = []
    for n, s in factors:
        if out and out[-1][1] == s * n:
            out[-1] = (out[-1][0] * n, s)
        else:
            out.append((n, s))
    return out


def _deal(queue, shape):
    """The factors of ``queue`` (in order) dealt out to the axes of ``shape``, or None."""
    queue = list(queue)
    axes = []
    for n in shape:
        fs, p = [], 1
        while n != 1 and p != n:
            if not queue:
                return None
            f = queue[0]
            q = p * f[0]
            if exact_div(n, q) is not None:             # the whole factor fits
                fs.append(f)
                queue.pop(0)
                p = q
                continue
            need = exact_div(n, p)
            rest = exact_div(f[0], need) if need is not None else None
            if rest is not None and rest != 1:           # the axis ends inside f: split
                fs.append((need, f[1] * rest))
                queue[0] = (rest, f[1])
                p = n
            elif len(queue) > 1 and f[1] == queue[1][1] * queue[1][0]:
                queue[:2] = [(f[0] * queue[1][0], queue[1][1])]   # merge, try again
            else:
                return None
        axes.append(fs)
    return axes if not queue else None


def chain_layout(source_shape, chain):
    """(offset, [(size, stride)]) of a C-contiguous array of ``source_shape`` read
    through ``chain`` (entries as chain_entry makes them, source first), in elements;
    None when some step would copy."""
    axes, stride = [], 1
    for n in reversed(tuple(source_shape)):
        axes.append([] if n == 1 else [(n, stride)])
        stride = stride * n
    axes.reverse()
    shape = list(source_shape)
    offset = 0
    for op, arg in chain:
        if op == "transpose":
            axes = [axes[a] for a in arg]
            shape = [shape[a] for a in arg]
        elif op == "reshape":
            axes = _deal([f for fs in axes for f in fs], tuple(arg))
            if axes is None:
                return None
            shape = list(arg)
        elif op == "slice":
            new_axes, new_shape = [], []
            for fs, n, start, stop, step in zip(axes, shape, *arg):
                if step < 1:
                    return None
                size = _slice_size(start, stop, step)
                if size is None:
                    return None
                if start == 0 and step == 1 and size == n:
                    new_axes.append(fs)
                else:
                    fs = _merge(fs)
                    if len(fs) > 1:
                        return None
                    s = fs[0][1] if fs else 0
                    offset = offset + start * s
                    new_axes.append([] if size == 1 else [(size, s * step)])
                new_shape.append(size)
            axes, shape = new_axes, new_shape
        else:
            return None
    out = []
    for fs, n in zip(axes, shape):
        fs = _merge(fs)
        if len(fs) > 1:
            return None
        out.append((n, fs[0][1] if fs else 0))
    return offset, out
