"""Adaptation strategies: each composes models + cache + ops + engine, nothing more."""
from ptcore.strategies.finetune import MODES, FineTune

__all__ = ["FineTune", "MODES"]
from ptcore.strategies.distill import Distill  # noqa: E402
__all__ += ["Distill"]
from ptcore.strategies.incremental import Incremental  # noqa: E402
__all__ += ["Incremental"]
