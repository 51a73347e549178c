"""Replay (rehearsal): each task trains on its own data plus the exemplars the memory kept of
the classes before (see memory.py for how they are chosen)."""
from __future__ import annotations

from ptcore.strategies.incremental.memory import union
from ptcore.strategies.incremental.registry import Method, register

__all__ = ["Replay"]


@register
class Replay(Method):
    name = "replay"
    help = ("train on exemplars of the old classes too (memory: exemplars in all, "
            "class-balanced, chosen by selection)")
    uses_memory = True

    def train_data(self, run, t, train, data):
        if "der" in self.parts:  # der's items carry the exemplars, with their stored logits
            return data, 0
        return union([data] + run.memory.datasets(train)), 0
