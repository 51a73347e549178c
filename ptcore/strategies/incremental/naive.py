"""Naive: plain fine-tuning on each task in turn, the lower bound every method is measured
against. It adds nothing, so it cannot be combined with anything."""
from __future__ import annotations

from ptcore.strategies.incremental.registry import NAIVE, Method, register

__all__ = ["Naive"]


@register
class Naive(Method):
    name = NAIVE
    help = "plain fine-tuning (forgets)"
    alone = True
