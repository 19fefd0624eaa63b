from .tensor import Tensor  # noqa: F401
from .tracer import Builder, Spec, building, current_builder, emit, spec, trace  # noqa: F401
from .functional import constant, sort, split, topk  # noqa: F401
