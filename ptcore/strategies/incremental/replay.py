"""Replay (rehearsal): each task trains on its own data plus the exemplars the memory kept of
the classes before (see memory.py for how they are chosen).

Two schedules (``replay_schedule``) for every part that trains on the exemplars (replay, der,
er-ace): "union", an epoch over the task's data and the exemplars together (len(new) +
len(memory) samples), and "mixed", Avalanche's and Mammoth's experience replay: the epoch is
the task's data, and each batch of B of its samples gets B exemplars drawn at random
(:class:`MixedBatches`), so a task costs len(new) / B optimizer steps per epoch."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ptcore.strategies.incremental.memory import union
from ptcore.strategies.incremental.registry import Method, register

__all__ = ["SCHEDULES", "MixedBatches", "check_schedule", "training_data", "Replay"]

SCHEDULES = ("union", "mixed")


class MixedBatches(Dataset):
    """The first ``new`` samples of ``data`` (the task's own; the epoch), each batch of them
    read through :meth:`__getitems__` followed by as many samples of the rest of ``data``
    (the exemplars, with whatever fields the parts gave them), drawn without replacement
    within the batch (all of them when there are fewer) by the global generator.

    The engine reads every batch under a seed of its own, a function of (seed, epoch, rank,
    batch) alone (ptcore.engine.sampling), so the draws are a function of these too: the
    same whatever the number of workers, redrawn identically by a run resumed mid-epoch,
    and under DDP each rank draws its own exemplars from the whole memory (which every rank
    holds)."""

    def __init__(self, data, new: int):
        if not 0 < new < len(data):
            raise ValueError(f"new must be in (0, {len(data)}): the task's samples, then the "
                             f"memory's; got {new!r}")
        self.data, self.new = data, new
        self.deterministic = False  # a batch is not a function of its indices

    def __len__(self) -> int:
        return self.new

    def __getitem__(self, i):
        if not -self.new <= i < self.new:
            raise IndexError(f"index {i} out of range for {self.new} samples")
        return self.data[i % self.new]

    def __getitems__(self, indices):
        drawn = torch.randperm(len(self.data) - self.new)[: len(indices)] + self.new
        rows = [i % self.new for i in indices] + drawn.tolist()
        getitems = getattr(self.data, "__getitems__", None)
        return getitems(rows) if getitems else [self.data[i] for i in rows]


def check_schedule(schedule: str, methods: dict[str, Method], method: str) -> str:
    """``schedule``, checked against the composition ``methods`` (name -> part)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"replay_schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "mixed" and not any(m.replays for m in methods.values()):
        raise ValueError(f"replay_schedule='mixed' mixes exemplars into the batches of a part "
                         f"that trains on them (replay, der, er-ace); {method!r} has none")
    return schedule


def training_data(run, t: int, train: list) -> tuple[object, list[int]]:
    """What task ``t`` trains on: ``train[t]`` through each part's ``train_data`` in order,
    and the fields each appended. Under the mixed schedule, its batches take the task's
    samples (those before the first part that appended exemplars) and draw the rest."""
    data, widths, new = train[t], [], None
    for m in run.methods.values():
        before = len(data)
        data, width = m.train_data(run, t, train, data)
        widths.append(width)
        if m.replays and new is None and len(data) > before:
            new = before  # the parts after keep the order (registry.Method.train_data)
    if run.replay_schedule == "mixed" and new is not None:
        data = MixedBatches(data, new)
    return data, widths


@register
class Replay(Method):
    name = "replay"
    help = ("train on exemplars of the old classes too (memory: exemplars in all, "
            "class-balanced, chosen by selection; replay_schedule: union or mixed batches)")
    uses_memory = True
    replays = True

    def train_data(self, run, t, train, data):
        if "der" in self.parts:  # der's items carry the exemplars, with their stored logits
            return data, 0
        return union([data] + run.memory.datasets(train)), 0
