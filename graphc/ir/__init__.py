"""The IR: tensor types with symbolic dims, nodes with source locations, the Graph."""
from .dims import Dim, Sym, evaluate  # noqa: F401
from .types import DTYPES, TensorType, normalize_dtype  # noqa: F401
from .node import Node, SourceLoc, capture_loc  # noqa: F401
from .graph import Graph  # noqa: F401
from .verify import verify  # noqa: F401
