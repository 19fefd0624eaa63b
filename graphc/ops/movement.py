"""Movement ops: reshape, transpose, slice, concat, embedding (a gather of rows),
broadcast_to, repeat, take_along_axis; squeeze and unsqueeze are reshapes."""
from __future__ import annotations

import numpy as np

from ..errors import AttrError, DTypeError, GraphcError, InputError, ShapeError
from ..ir.dims import Sym, as_dim, exact_div, prod
from ..ir.node import capture_loc
from ..ir.types import INT_DTYPES, TensorType
from ..lower import loopir as L
from ..lower.exprs import broadcast_index, delinearize, dim_expr, reshape_index
from .registry import norm_axis, register_op, same_dtype

# The names graphc.ops (and graphc) export from this module; a new op adds its name.
__all__ = ['broadcast_to', 'concat', 'embedding', 'repeat', 'reshape', 'squeeze',
           'take_along_axis', 'transpose', 'unsqueeze']

# Each op's ``lower_index(node, idx, operand)`` is its value at output index ``idx`` in
# terms of its operands at other indices (``operand(k, idx)``): no data moves in a fused
# kernel, the index is remapped.


def _shape_str(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _reshape_infer(types, attrs):
    (x,) = types
    try:
        target = [as_dim(d) for d in attrs["shape"]]
    except (TypeError, ValueError) as e:
        raise AttrError(f"reshape(): {e}") from None
    total = prod(x.shape)
    holes = [k for k, d in enumerate(target) if isinstance(d, int) and d == -1]
    if len(holes) > 1:
        raise ShapeError(f"reshape(): only one dim can be -1, got {_shape_str(target)}")
    if any(isinstance(d, int) and d < -1 for d in target):
        raise ShapeError(f"reshape(): negative dim in {_shape_str(target)}")
    if holes:
        known = prod(d for k, d in enumerate(target) if k != holes[0])
        fill = exact_div(total, known) if known != 0 else None
        if fill is None:
            raise ShapeError(f"reshape(): cannot reshape {x} ({total} elements) into "
                             f"{_shape_str(target)}: {total} is not a multiple of {known}")
        target[holes[0]] = fill
    elif prod(target) != total:
        raise ShapeError(f"reshape(): cannot reshape {x} ({total} elements) into "
                         f"{_shape_str(target)} ({prod(target)} elements)")
    attrs["shape"] = tuple(target)
    return TensorType(tuple(target), x.dtype)


def _reshape_index(node, idx, operand):
    return operand(0, reshape_index(idx, node.type.shape, operand.types[0].shape))


@register_op("reshape", kind="movement", infer=_reshape_infer, lower_index=_reshape_index)
def reshape(x, *, shape):
    """same elements, new shape (row-major); one dim may be -1"""
    return np.reshape(x, shape)


def _transpose_infer(types, attrs):
    (x,) = types
    axes = attrs["axes"]
    if axes is None:
        axes = tuple(reversed(range(x.rank)))
    else:
        axes = tuple(norm_axis(a, x.rank) for a in axes)
        if sorted(axes) != list(range(x.rank)):
            raise AttrError(f"transpose(): axes {tuple(attrs['axes'])} are not a permutation "
                            f"of the {x.rank} axes of {x}")
    attrs["axes"] = axes
    return TensorType(tuple(x.shape[a] for a in axes), x.dtype)


def _transpose_index(node, idx, operand):
    src = [None] * len(idx)
    for k, a in enumerate(node.attrs["axes"]):
        src[a] = idx[k]
    return operand(0, src)


@register_op("transpose", kind="movement", infer=_transpose_infer,
             lower_index=_transpose_index)
def transpose(x, *, axes=None):
    """permute axes (reverse them when axes is None)"""
    return np.transpose(x, axes)


def _slice_dim(dim, start, stop, step):
    """Canonical (start, stop, step, size) of one axis; symbolic bounds allowed."""
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise AttrError(f"slice(): step must be a positive int, got {step!r}")
    if isinstance(dim, int) and not isinstance(start, Sym) and not isinstance(stop, Sym):
        s, e, st = slice(start, stop, step).indices(dim)
        return s, e, st, max(0, -(-(e - s) // st))
    start = 0 if start is None else start
    stop = dim if stop is None else stop
    if isinstance(start, int) and start < 0:
        start = dim + start
    if isinstance(stop, int) and stop < 0:
        stop = dim + stop
    size = stop - start
    if step != 1:
        if isinstance(size, Sym):
            raise AttrError("slice(): a step other than 1 needs static bounds")
        size = max(0, -(-size // step))
    if isinstance(size, int) and size < 0:
        size = 0
    return start, stop, step, size


def _slice_infer(types, attrs):
    (x,) = types
    starts, stops, steps = (list(attrs[k]) for k in ("starts", "stops", "steps"))
    n = x.rank
    if not len(starts) == len(stops) == len(steps) <= n:
        raise AttrError(f"slice(): starts/stops/steps must have one entry per axis (<= {n})")
    pad = n - len(starts)
    starts += [None] * pad
    stops += [None] * pad
    steps += [1] * pad
    shape, cs, ce, cst = [], [], [], []
    for d, s, e, st in zip(x.shape, starts, stops, steps):
        s, e, st, size = _slice_dim(d, s, e, st)
        cs.append(s)
        ce.append(e)
        cst.append(st)
        shape.append(size)
    attrs.update(starts=tuple(cs), stops=tuple(ce), steps=tuple(cst))
    return TensorType(tuple(shape), x.dtype)


def _slice_index(node, idx, operand):
    return operand(0, [L.add(dim_expr(s) if s else L.c(0), L.mul(i, L.c(st)))
                       for i, s, st in zip(idx, node.attrs["starts"], node.attrs["steps"])])


@register_op("slice", kind="movement", infer=_slice_infer, lower_index=_slice_index)
def slice_(x, *, starts, stops, steps):
    """x[start:stop:step] per axis (bounds may be symbolic)"""
    # Inference makes every bound non-negative, so a negative one here is a symbolic
    # bound (S-5) that these sizes push below 0; NumPy would count it from the end.
    for axis, (s, e) in enumerate(zip(starts, stops)):
        if (s is not None and s < 0) or (e is not None and e < 0):
            raise InputError(f"slice(): bounds {s}:{e} of axis {axis} are negative for "
                             f"these sizes (input shape {x.shape})")
    return x[tuple(slice(s, e, st) for s, e, st in zip(starts, stops, steps))]


def _concat_infer(types, attrs):
    if not types:
        raise ShapeError("concat() needs at least one tensor")
    dt = same_dtype(types, "concat() operands")
    first = types[0]
    axis = norm_axis(attrs["axis"], first.rank)
    attrs["axis"] = axis
    total = 0
    for t in types:
        if t.rank != first.rank or any(a != b for k, (a, b) in
                                       enumerate(zip(t.shape, first.shape)) if k != axis):
            raise ShapeError(f"concat(): shapes {', '.join(map(str, types))} differ outside "
                             f"axis {axis}")
        total = total + t.shape[axis]
    shape = list(first.shape)
    shape[axis] = total
    return TensorType(tuple(shape), dt)


def _concat_index(node, idx, operand):
    """Each piece where its range of the axis holds idx (a chain of selects)."""
    axis = node.attrs["axis"]
    pieces = []
    offset: L.Expr = L.c(0)
    for k, t in enumerate(operand.types):
        size = t.shape[axis]
        sub = list(idx)
        if not (isinstance(offset, L.Const) and offset.value == 0):
            sub[axis] = L.Bin("-", idx[axis], offset)
        end = L.add(offset, dim_expr(size))
        pieces.append((end, operand(k, sub)))
        offset = end
    expr = pieces[-1][1]
    for end, value in reversed(pieces[:-1]):
        expr = L.Select(L.Bin("<", idx[axis], end), value, expr)
    return expr


@register_op("concat", kind="movement", infer=_concat_infer, lower_index=_concat_index)
def concat(*xs, axis=0):
    """join tensors along an existing axis"""
    return np.concatenate(xs, axis=axis)


def _embedding_infer(types, attrs):
    table, ids = types
    if ids.dtype not in INT_DTYPES:
        raise DTypeError(f"embedding(): ids must be int32 or int64, got {ids.dtype}")
    if table.rank < 1:
        raise ShapeError(f"embedding(): the table must have rank >= 1, got {table}")
    return TensorType(ids.shape + table.shape[1:], table.dtype)


def _embedding_index(node, idx, operand):
    ri = operand.types[1].rank
    row = L.Cast(operand(1, idx[:ri]), "int64")
    return operand(0, [row] + list(idx[ri:]))


@register_op("embedding", kind="movement", infer=_embedding_infer,
             lower_index=_embedding_index)
def embedding(table, ids):
    """table[ids]: gather rows of ``table``; ids out of range are an error"""
    n = table.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids[(ids < 0) | (ids >= n)].ravel()[0]
        raise InputError(f"embedding(): id {int(bad)} is out of range for a table of {n} rows")
    return table[ids]


def _axis(op, axis, rank, what):
    """``axis`` in [-rank, rank) as a non-negative int, or an AttrError naming ``what``."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, (bool, np.bool_)):
        raise AttrError(f"{op}(): axis must be an int, got {axis!r} (for {what})")
    if not -rank <= axis < rank:
        raise AttrError(f"{op}(): axis {axis} is out of range for {what} "
                        f"(axes -{rank}..{rank - 1})")
    return int(axis) % rank


# -- broadcast_to ---------------------------------------------------------------------------
def _broadcast_to_infer(types, attrs):
    (x,) = types
    shape = attrs["shape"]
    if isinstance(shape, (int, str, Sym, np.integer)):
        shape = (shape,)
    try:
        target = tuple(as_dim(d) for d in shape)
    except (TypeError, ValueError) as e:
        raise AttrError(f"broadcast_to(): {e}") from None
    if any(isinstance(d, int) and d < 0 for d in target):
        raise ShapeError(f"broadcast_to(): negative dim in {_shape_str(target)}")
    if len(target) < x.rank:
        raise ShapeError(f"broadcast_to(): cannot broadcast {x} to {_shape_str(target)}: "
                         f"the target has fewer dims ({len(target)}) than the tensor")
    lead = len(target) - x.rank
    for k, d in enumerate(x.shape):
        if d != 1 and d != target[lead + k]:
            raise ShapeError(f"broadcast_to(): cannot broadcast {x} to {_shape_str(target)}:"
                             f" dim {k} is {d}, not 1 or {target[lead + k]}")
    attrs["shape"] = target
    return TensorType(target, x.dtype)


def _broadcast_to_index(node, idx, operand):
    return operand(0, broadcast_index(idx, node.type.shape, operand.types[0].shape))


@register_op("broadcast_to", kind="movement", infer=_broadcast_to_infer,
             lower_index=_broadcast_to_index)
def broadcast_to(x, *, shape):
    """x broadcast (NumPy rules) to ``shape``: size-1 dims repeat, new dims go in front;
    no data moves in a fused kernel"""
    return np.array(np.broadcast_to(x, tuple(shape)))


# -- repeat -----------------------------------------------------------------------------
def _repeat_infer(types, attrs):
    (x,) = types
    r = attrs["repeats"]
    if not isinstance(r, (int, np.integer)) or isinstance(r, (bool, np.bool_)) or r < 1:
        raise AttrError(f"repeat(): repeats must be a positive int, got {r!r} (for {x})")
    r = attrs["repeats"] = int(r)
    if attrs["axis"] is None:
        return TensorType((prod(x.shape) * r,), x.dtype)
    if x.rank == 0:
        raise AttrError(f"repeat(): axis {attrs['axis']!r} given for the rank-0 tensor {x} "
                        "(use axis=None)")
    axis = attrs["axis"] = _axis("repeat", attrs["axis"], x.rank, x)
    shape = list(x.shape)
    shape[axis] = shape[axis] * r
    return TensorType(tuple(shape), x.dtype)


def _repeat_index(node, idx, operand):
    r, axis = node.attrs["repeats"], node.attrs["axis"]
    if axis is None:            # the flattened tensor
        return operand(0, delinearize(L.floordiv(idx[0], L.c(r)), operand.types[0].shape))
    src = list(idx)
    src[axis] = L.floordiv(idx[axis], L.c(r))
    return operand(0, src)


@register_op("repeat", kind="movement", infer=_repeat_infer, lower_index=_repeat_index)
def repeat(x, *, repeats, axis=None):
    """each element ``repeats`` times along ``axis`` (np.repeat, torch.repeat_interleave;
    over the flattened tensor when axis is None)"""
    return np.repeat(x, repeats, axis=axis)


# -- take_along_axis ----------------------------------------------------------------------
def _take_along_axis_infer(types, attrs):
    x, index = types
    if index.dtype not in INT_DTYPES:
        raise DTypeError(f"take_along_axis(): the index must be int32 or int64, got "
                         f"{index} (for {x})")
    if x.rank == 0:
        raise ShapeError(f"take_along_axis(): the tensor must have rank >= 1, got {x}")
    if index.rank != x.rank:
        raise ShapeError(f"take_along_axis(): the index {index} has rank {index.rank}; it "
                         f"must have the rank ({x.rank}) of the tensor {x}")
    axis = attrs["axis"] = _axis("take_along_axis", attrs["axis"], x.rank, x)
    shape = []
    for k, (a, b) in enumerate(zip(x.shape, index.shape)):
        if k == axis:
            shape.append(b)
        elif a == 1 or a == b:
            shape.append(b)
        elif b == 1:
            shape.append(a)
        else:
            raise ShapeError(f"take_along_axis(): {x} and index {index} do not broadcast: "
                             f"dim {k} is {a} in one and {b} in the other (axis {axis})")
    return TensorType(tuple(shape), x.dtype)


def _take_along_axis_index(node, idx, operand):
    axis = node.attrs["axis"]
    xt, it = operand.types
    out = node.type.shape
    at = [L.c(0) if (d == 1 and o != 1) else i for i, d, o in zip(idx, it.shape, out)]
    n = dim_expr(xt.shape[axis])
    i = L.Cast(operand(1, at), "int64")
    i = L.Select(L.Bin("<", i, L.c(0)), L.Bin("+", i, n), i)       # NumPy's negative ids
    # Ids out of range are an InputError on the reference backend; a kernel clamps them
    # so that it never reads outside the tensor.
    i = L.Bin("min", L.Bin("max", i, L.c(0)), L.Bin("-", n, L.c(1)))
    src = [L.c(0) if (d == 1 and o != 1) else j for j, d, o in zip(idx, xt.shape, out)]
    src[axis] = i
    return operand(0, src)


@register_op("take_along_axis", kind="movement", infer=_take_along_axis_infer,
             lower_index=_take_along_axis_index)
def take_along_axis(x, index, *, axis):
    """x's entries at ``index`` along ``axis`` (np.take_along_axis, torch.gather): index
    has x's rank and broadcasts with it on the other axes; ids in [-n, n)"""
    n = x.shape[axis]
    if index.size and (index.min() < -n or index.max() >= n):
        bad = index[(index < -n) | (index >= n)].ravel()[0]
        raise InputError(f"take_along_axis(): index {int(bad)} is out of range for axis "
                         f"{axis} of size {n} (input shape {x.shape})")
    return np.take_along_axis(x, index.astype(np.int64), axis=axis)


# -- squeeze / unsqueeze: reshapes --------------------------------------------------------
def _shape_of(x):
    from ..frontend.tensor import Tensor
    if isinstance(x, Tensor):
        return x, tuple(x.shape), str(x.type)
    x = np.asarray(x)
    return x, x.shape, f"{x.dtype}{_shape_str(x.shape)}"


def _axis_or_raise(op, axis, rank, what):
    try:
        return _axis(op, axis, rank, what)
    except GraphcError as e:
        raise AttrError(e.message, op=op, loc=capture_loc()) from None


def squeeze(x, axis=None):
    """x without the size-1 dims ``axis`` (an int or a tuple; every size-1 dim when
    None): a reshape. A dim of another size is a ShapeError."""
    x, shape, what = _shape_of(x)
    if axis is None:
        axes = [k for k, d in enumerate(shape) if d == 1]
    else:
        many = axis if isinstance(axis, (tuple, list)) else (axis,)
        axes = sorted({_axis_or_raise("squeeze", a, len(shape), what) for a in many})
    for a in axes:
        if shape[a] != 1:
            raise ShapeError(f"squeeze(): dim {a} of {what} is {shape[a]}, not 1",
                             op="squeeze", loc=capture_loc())
    return reshape(x, shape=tuple(d for k, d in enumerate(shape) if k not in axes))


def unsqueeze(x, axis):
    """x with a new size-1 dim at ``axis`` (in [-rank-1, rank]): a reshape"""
    x, shape, what = _shape_of(x)
    a = _axis_or_raise("unsqueeze", axis, len(shape) + 1, what)
    return reshape(x, shape=shape[:a] + (1,) + shape[a:])
