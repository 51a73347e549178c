"""Incremental learning: :class:`Incremental` (the sequence of tasks, its evaluation and
checkpoints) and the methods it composes, one module each behind the hooks and registry of
registry.py. Importing a method's module registers it; the built-ins register here, in the
order their hooks run (see registry.py)."""
from ptcore.strategies.incremental import naive, wa, bic, der, replay, er_ace, agem  # noqa: F401
from ptcore.strategies.incremental import lwf, ewc, mas  # noqa: F401
from ptcore.strategies.incremental import ncm, simplecil, ranpac, gdumb, aper, l2p  # noqa: F401
from ptcore.strategies.incremental.registry import (METHODS, PRESETS, Method, Step, Term,
                                                    method_help, parse_method, register,
                                                    register_preset)
from ptcore.strategies.incremental.strategy import PROTOCOLS, Incremental

__all__ = ["Incremental", "METHODS", "PRESETS", "PROTOCOLS", "parse_method", "Method", "Step",
           "Term", "method_help", "register", "register_preset"]
