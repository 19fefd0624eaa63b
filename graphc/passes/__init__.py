"""Optimisation passes: ``register_pass``, ``PassManager``, ``optimize``, instruments, and
rewrite rules as values (``RuleSet``, ``apply_rules``)."""
from .manager import (PIPELINES, PassError, PassInfo, PassManager, all_passes,  # noqa: F401
                      declare_pass, get_pass, note, optimize, pass_info, plan_pipeline,
                      register_pass, resolve_pipeline, unregister_pass)
from .instruments import (DumpIR, Explain, Instrument, NumericCheck,  # noqa: F401
                          NumericError, TimePasses, VerifyIR)
from .patterns import Rule, RuleSet, fusion_rules  # noqa: F401
from .patterns import apply as apply_rules  # noqa: F401
