"""Elementwise ATen ops: arithmetic (torch's type promotion: the output dtype torch.export
recorded), comparisons, logic, math functions, where, casts and the no-op copies."""
from __future__ import annotations

from ... import ops
from ..tensor import Tensor
from .table import aten_op

_FLOATS = ("float32", "float64")


def _is_t(x):
    return isinstance(x, Tensor)


def _operands(ctx, a, b, dtype):
    """a and b with tensors cast to ``dtype``; numbers become constants of it."""
    return ctx.tensor(a, dtype) if (_is_t(a) or not _is_t(b)) else _num(a, dtype), \
        ctx.tensor(b, dtype) if (_is_t(b) or not _is_t(a)) else _num(b, dtype)


def _num(x, dtype):
    from ...ir.dims import Sym
    if isinstance(x, Sym):
        return x
    return float(x) if dtype in _FLOATS else (bool(x) if dtype == "bool" else int(x))


def _sym_operand(ctx, x, dtype):
    from ...ir.dims import Sym
    return ctx.tensor(x, dtype) if isinstance(x, Sym) else x


def _binary(fn):
    def translate(ctx):
        a, b = ctx.arg(0), ctx.arg(1)
        dt = ctx.out_dtype()
        a, b = _operands(ctx, _sym_operand(ctx, a, dt), _sym_operand(ctx, b, dt), dt)
        return fn(ctx, a, b)
    return translate


def _add(ctx, a, b):
    alpha = ctx.kw("alpha", 1)
    if alpha != 1:
        b = ops.mul(b, _num(alpha, ctx.out_dtype()))
    return ops.add(a, b)


def _sub(ctx, a, b):
    alpha = ctx.kw("alpha", 1)
    if alpha != 1:
        b = ops.mul(b, _num(alpha, ctx.out_dtype()))
    return ops.sub(a, b)


def _div(ctx, a, b):
    mode = ctx.kw("rounding_mode")
    if mode is None:
        return ops.div(a, b)
    if mode == "floor":
        if ctx.out_dtype() in _FLOATS:
            return ops.floor(ops.div(a, b))
        return ops.div(a, b)        # graphc's integer div floors, as torch's floor mode
    raise ctx.fail(f"rounding_mode={mode!r} (graphc translates None and 'floor')")


aten_op("add.Tensor", "add.Scalar")(_binary(_add))
aten_op("sub.Tensor", "sub.Scalar")(_binary(_sub))
aten_op("mul.Tensor", "mul.Scalar")(_binary(lambda ctx, a, b: ops.mul(a, b)))
aten_op("div.Tensor", "div.Scalar", "div.Tensor_mode", "div.Scalar_mode", "true_divide.Tensor",
        "true_divide.Scalar")(_binary(_div))
aten_op("maximum.default")(_binary(lambda ctx, a, b: ops.maximum(a, b)))
aten_op("minimum.default")(_binary(lambda ctx, a, b: ops.minimum(a, b)))


@aten_op("rsub.Scalar", "rsub.Tensor")
def rsub(ctx):
    dt = ctx.out_dtype()
    a, b = _operands(ctx, ctx.arg(0), ctx.arg(1), dt)
    alpha = ctx.kw("alpha", 1)
    if alpha != 1:
        a = ops.mul(a, _num(alpha, dt))
    return ops.sub(b, a)


@aten_op("pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar")
def pow_(ctx):
    dt = ctx.out_dtype()
    a, b = ctx.arg(0), ctx.arg(1)
    if _is_t(a) and not _is_t(b) and b == 2:
        a = ctx.tensor(a, dt)
        return ops.mul(a, a)
    if _is_t(a) and not _is_t(b) and b == 0.5:
        return ops.sqrt(ctx.tensor(a, dt))
    a, b = _operands(ctx, a, b, dt)
    return ops.pow(a, b)


def _common(ctx, a, b):
    ts = [x for x in (a, b) if _is_t(x)]
    dts = {t.dtype for t in ts}
    floats = [d for d in dts if d in _FLOATS]
    if floats:
        return "float64" if "float64" in floats else "float32"
    if any(isinstance(x, float) for x in (a, b)):
        return "float32"
    if "int64" in dts:
        return "int64"
    if dts == {"bool"} and all(_is_t(x) or isinstance(x, bool) for x in (a, b)):
        return "bool"
    return "int64" if not dts else sorted(dts)[0]


def _compare(fn):
    def translate(ctx):
        a, b = ctx.arg(0), ctx.arg(1)
        dt = _common(ctx, a, b)
        a, b = _operands(ctx, _sym_operand(ctx, a, dt), _sym_operand(ctx, b, dt), dt)
        return fn(a, b)
    return translate


for _name, _fn in (("eq", ops.equal), ("ne", ops.not_equal), ("lt", ops.less),
                   ("le", ops.less_equal), ("gt", ops.greater), ("ge", ops.greater_equal)):
    aten_op(f"{_name}.Tensor", f"{_name}.Scalar")(_compare(_fn))


def _logic(fn, name):
    def translate(ctx):
        a, b = ctx.arg(0), ctx.arg(1)
        for x in (a, b):
            if _is_t(x) and x.dtype != "bool":
                raise ctx.fail(f"{name} of {x.dtype} tensors (graphc translates it on bool "
                               f"tensors, as masks use it)")
        a, b = _operands(ctx, a, b, "bool")
        return fn(a, b)
    return translate


aten_op("bitwise_and.Tensor", "bitwise_and.Scalar", "logical_and.default")(
    _logic(ops.logical_and, "bitwise_and"))
aten_op("bitwise_or.Tensor", "bitwise_or.Scalar", "logical_or.default")(
    _logic(ops.logical_or, "bitwise_or"))
aten_op("bitwise_xor.Tensor", "bitwise_xor.Scalar", "logical_xor.default")(
    _logic(ops.logical_xor, "bitwise_xor"))


@aten_op("logical_not.default", "bitwise_not.default")
def logical_not(ctx):
    x = ctx.arg(0)
    if x.dtype != "bool":
        if ctx.op.startswith("aten.bitwise"):
            raise ctx.fail(f"bitwise_not of a {x.dtype} tensor (graphc translates bool)")
        x = ops.not_equal(x, 0)
    return ops.logical_not(x)


def _unary(fn, float_only=True):
    def translate(ctx):
        x = ctx.arg(0)
        dt = ctx.out_dtype()
        if float_only and x.dtype != dt:
            x = ops.cast(x, dtype=dt)
        return fn(x)
    return translate


for _name, _fn in (("neg", ops.neg), ("exp", ops.exp), ("log", ops.log), ("sqrt", ops.sqrt),
                   ("rsqrt", ops.rsqrt), ("tanh", ops.tanh), ("sigmoid", ops.sigmoid),
                   ("sin", ops.sin), ("cos", ops.cos), ("abs", ops.abs), ("erf", ops.erf),
                   ("relu", ops.relu), ("silu", ops.silu), ("floor", ops.floor),
                   ("ceil", ops.ceil), ("sign", ops.sign), ("reciprocal", ops.reciprocal),
                   ("expm1", ops.expm1), ("log1p", ops.log1p)):
    aten_op(f"{_name}.default")(_unary(_fn))
aten_op("isnan.default")(_unary(ops.isnan, float_only=False))
aten_op("isinf.default")(_unary(ops.isinf, float_only=False))


@aten_op("gelu.default")
def gelu(ctx):
    return ops.gelu(ctx.arg(0), approximate=ctx.kw("approximate", ctx.arg(1, default="none")))


@aten_op("clamp.default", "clamp.Tensor", "hardtanh.default")
def clamp(ctx):
    x = ctx.arg(0)
    lo = ctx.arg(1, "min", -1.0 if ctx.op == "aten.hardtanh.default" else None)
    hi = ctx.arg(2, "max", 1.0 if ctx.op == "aten.hardtanh.default" else None)
    if _is_t(lo) or _is_t(hi):
        if lo is not None:
            x = ops.maximum(x, ctx.tensor(lo, x.dtype))
        if hi is not None:
            x = ops.minimum(x, ctx.tensor(hi, x.dtype))
        return x
    return ops.clip(x, min=lo, max=hi)


@aten_op("where.self", "where.ScalarSelf", "where.ScalarOther", "where.Scalar")
def where(ctx):
    cond, a, b = ctx.arg(0), ctx.arg(1), ctx.arg(2)
    dt = ctx.out_dtype()
    if cond.dtype != "bool":
        cond = ops.not_equal(cond, 0)
    return ops.where(cond, ctx.tensor(a, dt), ctx.tensor(b, dt))


@aten_op("_to_copy.default", "to.dtype", "_to_dtype.default",
         "prims.convert_element_type.default")
def to_copy(ctx):
    x = ctx.arg(0)
    dt = ctx.out_dtype()
    return x if x.dtype == dt else ops.cast(x, dtype=dt)


@aten_op("clone.default", "alias.default", "lift_fresh_copy.default", "detach.default",
         "contiguous.default")
def identity(ctx):
    return ctx.arg(0)


@aten_op("masked_fill.Scalar", "masked_fill.Tensor")
def masked_fill(ctx):
    x, mask, value = ctx.arg(0), ctx.arg(1), ctx.arg(2)
    return ops.where(mask, ctx.tensor(value, x.dtype), x)
