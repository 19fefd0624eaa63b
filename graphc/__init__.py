"""graphc: a compiler for Transformer models written in Python.

    g = graphc.trace(fn, graphc.spec(("S", 768), "float32"))
    print(g)
    exe = graphc.compile(g, backend="reference")
    y = exe(x)
"""
from .errors import (AttrError, BackendError, DTypeError, GraphcError, InputError,  # noqa: F401
                     RegistrationError,
                     ShapeError, SymbolError, TraceError, UnknownOpError, VerifyError)
from .ir import Graph, Node, SourceLoc, Sym, TensorType, verify  # noqa: F401
from .ops import (OpDef, add, all_ops, cast, causal_mask, concat, div, embedding,  # noqa: F401
                  erf, exp, gelu, get_op, greater, layernorm, less, log, matmul, max,
                  maximum, mean, minimum, mul, neg, register_op, relu, reshape, rmsnorm,
                  rsqrt, scale, sigmoid, silu, slice, softmax, sqrt, sub, sum, tanh,
                  transpose, where)
from .ops import (abs, ceil, clip, cos, equal, expm1, floor,  # noqa: F401
                  greater_equal, isinf, isnan, less_equal, log1p, logical_and,
                  logical_not, logical_or, logical_xor, not_equal, pow, reciprocal,
                  sign, sin, softplus)
from .ops import *  # noqa: F401,F403  (every public op: graphc.ops.__all__)
from .frontend import Spec, Tensor, constant, sort, spec, split, topk, trace  # noqa: F401
from .api import compile, compile_many  # noqa: F401
from .passes import PassManager, optimize, register_pass  # noqa: F401
from .passes.patterns import Rule, register_rule  # noqa: F401
from .runtime.backends import available_backends  # noqa: F401

__version__ = "0.1.0"
from .ops import moe, rope  # noqa: F401,E402
from .errors import CheckpointError  # noqa: F401,E402
from .frontend.onnx import UnsupportedOpError, from_onnx  # noqa: F401,E402  (onnx imported lazily)
from .frontend.torch import from_torch, torch_backend  # noqa: F401,E402  (torch imported lazily)
