"""Optimisation passes: ``register_pass``, ``PassManager``, ``optimize`` and instruments."""
from .manager import (PIPELINES, PassError, PassManager, all_passes, get_pass,  # noqa: F401
                      note, optimize, register_pass, unregister_pass)
from .instruments import (DumpIR, Explain, Instrument, NumericCheck,  # noqa: F401
                          NumericError, TimePasses, VerifyIR)
