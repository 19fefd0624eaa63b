"""The op registry and every built-in op. Each name here is also a traced function."""
from .registry import (KINDS, OpDef, all_ops, build_node, get_op, register_op,  # noqa: F401
                       unregister_op)
from .elementwise import (add, cast, div, erf, exp, gelu, greater, less, log,  # noqa: F401
                          maximum, minimum, mul, neg, relu, rsqrt, scale, sigmoid, silu,
                          sqrt, sub, tanh, where)
from .elementwise import (abs_ as abs, ceil, clip, cos, equal, expm1,  # noqa: F401
                          floor, greater_equal, isinf, isnan, less_equal, log1p,
                          logical_and, logical_not, logical_or, logical_xor,
                          not_equal, pow_ as pow, reciprocal, sign, sin, softplus)
from .reduction import layernorm, max, mean, rmsnorm, softmax, sum  # noqa: F401
from .contraction import matmul  # noqa: F401
from .movement import concat, embedding, reshape, transpose  # noqa: F401
from .movement import slice_ as slice  # noqa: F401
from .selection import causal_mask, topk  # noqa: F401
from .fused import add_layernorm, attention, fused, gemm  # noqa: F401
from .rope import rope  # noqa: F401,E402
from .moe import grouped_matmul, moe  # noqa: F401,E402

# Each module's ``__all__`` lists its public ops; graphc re-exports everything here.
from . import movement as _movement, reduction as _reduction, selection as _selection  # noqa: E402
from .movement import *  # noqa: F401,F403,E402
from .reduction import *  # noqa: F401,F403,E402
from .selection import *  # noqa: F401,F403,E402
__all__ = sorted(set(_movement.__all__ + _reduction.__all__ + _selection.__all__) | {
    "abs", "add", "cast", "ceil", "clip", "cos", "div", "equal", "erf", "exp", "expm1",
    "floor", "gelu", "greater", "greater_equal", "isinf", "isnan", "less", "less_equal",
    "log", "log1p", "logical_and", "logical_not", "logical_or", "logical_xor", "matmul",
    "maximum", "minimum", "mul", "neg", "not_equal", "pow", "reciprocal", "relu", "rsqrt",
    "scale", "sigmoid", "sign", "silu", "sin", "slice", "softplus", "sqrt", "sub", "tanh",
    "where", "grouped_matmul", "moe", "rope", "OpDef", "all_ops", "get_op", "register_op"})
