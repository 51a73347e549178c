"""Knowledge distillation: :class:`Distill` (strategy.py) and the terms of its loss, one
module each behind the registry of terms.py (kd, dkd, dist, fitnets, at, rkd, crd)."""
# Importing a term's module registers it; this order is the registry's (and the help's).
from ptcore.strategies.distill import kd, dkd, dist, fitnets, at, rkd, crd  # noqa: F401,I001
from ptcore.strategies.distill.strategy import (DISTILL_MODES, DIVERGENCES, Distill,
                                                parse_distill_method)
from ptcore.strategies.distill.terms import TERMS, Option, Setup, Step, Term, register

DISTILL_METHODS = tuple(TERMS)  # the built-in terms

__all__ = ["Distill", "DISTILL_MODES", "DISTILL_METHODS", "DIVERGENCES", "parse_distill_method",
           "Term", "Option", "Setup", "Step", "register", "TERMS"]
