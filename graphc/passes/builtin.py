"""Importing this module registers every built-in pass."""
from . import cse, dce, decompose, fold, simplify  # noqa: F401
from . import fuse_patterns  # noqa: F401
from . import fuse  # noqa: F401
from . import schedule  # noqa: F401
from . import plan_memory  # noqa: F401
