"""Exemplar memory for replay: a fixed budget of training samples, split evenly over the
classes seen so far (class-balanced), chosen by herding in feature space (iCaRL) or at
random. Exemplars are kept as positions in their task's training set, so the memory is
small to checkpoint and identical on every process. With ``holdout`` (BiC) a share of each
class's quota is a held-out slice: random samples reserved before their task trains, never
trained on or replayed, kept to fit the bias correction; taken out of the budget, or with
``beside`` kept beside it (a validation set of its own, as BiC's paper and Avalanche keep,
while the exemplars keep the whole budget)."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset

from ptcore.data import LabeledSubset, is_deterministic, targets_of
from ptcore.runtime import distributed as D
from ptcore.strategies.incremental.features import embed

__all__ = ["SELECTIONS", "herding", "ExemplarMemory", "union"]

SELECTIONS = ("herding", "random")


def union(parts: list):
    """``parts`` as one dataset (the part itself if there is one), deterministic when every
    part is (what lets a frozen module's outputs over it be cached)."""
    if len(parts) == 1:
        return parts[0]
    data = ConcatDataset(parts)
    data.deterministic = all(is_deterministic(p) for p in parts)
    return data


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """Positions of ``m`` rows of ``features`` [n, d], chosen one at a time so that the mean
    of the rows chosen so far stays as close as possible to the mean of all rows (Welling
    2009, as iCaRL uses it). The order is a priority: any prefix is a good smaller set."""
    if not isinstance(m, int) or not 0 <= m <= len(features):
        raise ValueError(f"m must be an int in [0, {len(features)}], got {m!r}")
    features = features.double()
    target = features.mean(0)
    total = torch.zeros_like(target)
    free = torch.ones(len(features), dtype=torch.bool, device=features.device)
    chosen = []
    for k in range(1, m + 1):
        dist_to_mean = (target - (total + features) / k).norm(dim=1)
        i = int(dist_to_mean.masked_fill(~free, float("inf")).argmin())
        chosen.append(i)
        total += features[i]
        free[i] = False
    return torch.tensor(chosen, dtype=torch.long)


class ExemplarMemory:
    """At most ``budget`` samples, ``budget // classes_seen`` per class: of those,
    ``held(quota)`` held out (``holdout`` share, at least one when ``holdout`` > 0) and the
    rest exemplars; with ``beside``, ``quota`` exemplars and ``held(quota)`` held out beside
    them."""

    def __init__(self, budget: int, selection: str = "herding", seed: int = 0,
                 holdout: float = 0.0, beside: bool = False):
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(f"memory must be a positive int (exemplars in all), got {budget!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        if not 0.0 <= holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {holdout!r}")
        self.budget, self.selection, self.seed, self.holdout = budget, selection, seed, holdout
        self.beside = bool(beside and holdout)
        self.exemplars: dict[int, tuple[int, list[int]]] = {}  # row -> (task, positions)
        self.heldout: dict[int, tuple[int, list[int]]] = {}    # row -> (task, positions)

    def __len__(self) -> int:
        return sum(len(p) for _, p in self.exemplars.values())

    def held(self, quota: int) -> int:
        """Held-out samples per class at a per-class ``quota``."""
        return max(1, round(self.holdout * quota)) if self.holdout else 0

    def kept(self, quota: int) -> int:
        """Exemplars per class at a per-class ``quota``."""
        return quota if self.beside else quota - self.held(quota)

    def min_budget(self, classes: int) -> int:
        """The smallest budget that leaves every one of ``classes`` an exemplar."""
        return classes * (2 if self.holdout and not self.beside else 1)

    def _quota(self, new_rows: int) -> int:
        return self.budget // (len(self.exemplars.keys() | self.heldout.keys()) + new_rows)

    def reserve(self, task: int, data, rows: list[int]) -> list[int]:
        """Hold out random samples of ``rows`` (labels of ``data``, ``task``'s training set)
        before the task trains; returns the positions of ``data`` left to train on. The same
        every call (seeded), so a resumed task reserves what it reserved before."""
        quota = self._quota(len([r for r in rows if r not in self.heldout]))
        targets = targets_of(data)
        reserved = set()
        for row in rows:
            positions = (targets == row).nonzero().flatten()
            g = torch.Generator().manual_seed(self.seed * 100_003 + row + 50_000)
            chosen = positions[torch.randperm(len(positions), generator=g)]
            chosen = chosen[: min(self.held(quota), len(positions) - 1)].tolist()
            self.heldout[row] = (task, chosen)
            reserved.update(chosen)
        return [i for i in range(len(data)) if i not in reserved]

    def _choose(self, model, data, positions: torch.Tensor, row: int, m: int, device,
                num_workers):
        if self.selection == "random":
            g = torch.Generator().manual_seed(self.seed * 100_003 + row)
            return positions[torch.randperm(len(positions), generator=g)[:m]]
        feats, _ = embed(model, LabeledSubset(data, positions), device=device,
                         num_workers=num_workers)
        return positions[herding(feats, m)]

    def add(self, model, task: int, data, rows: list[int], *, device, num_workers=0) -> None:
        """Choose exemplars of ``rows`` (head rows = labels of ``data``, the training set of
        ``task``) with ``model``'s features, then shrink every class to the new quota. Rank 0
        chooses and broadcasts, so the memory is the same on every process."""
        quota = self._quota(len([r for r in rows if r not in self.heldout]))
        targets = targets_of(data)
        chosen = {}
        if D.is_main():
            for row in rows:
                positions = (targets == row).nonzero().flatten()
                kept = set(self.heldout.get(row, (task, []))[1])
                positions = positions[[int(p) not in kept for p in positions]]
                m = min(self.kept(quota), len(positions))
                chosen[row] = (task, self._choose(model, data, positions, row, m, device,
                                                  num_workers).tolist())
        if D.is_distributed():
            box = [chosen]
            dist.broadcast_object_list(box, src=0)
            chosen = box[0]
        self.exemplars.update(chosen)
        for row, (t, p) in self.exemplars.items():
            self.exemplars[row] = (t, p[:self.kept(quota)])
        for row, (t, p) in self.heldout.items():
            self.heldout[row] = (t, p[:self.held(quota)])

    @staticmethod
    def _subsets(entries, task_data: list) -> list[LabeledSubset]:
        by_task: dict[int, list[int]] = {}
        for task, positions in entries.values():
            by_task.setdefault(task, []).extend(positions)
        return [LabeledSubset(task_data[t], sorted(p)) for t, p in sorted(by_task.items()) if p]

    def datasets(self, task_data: list) -> list[LabeledSubset]:
        """The exemplars as subsets of their tasks' training sets (``task_data[t]``)."""
        return self._subsets(self.exemplars, task_data)

    def heldout_datasets(self, task_data: list) -> list[LabeledSubset]:
        """The held-out slice, likewise."""
        return self._subsets(self.heldout, task_data)

    def state_dict(self) -> dict:
        return {"budget": self.budget, "selection": self.selection, "holdout": self.holdout,
                "beside": self.beside,
                "exemplars": [[row, t, p] for row, (t, p) in sorted(self.exemplars.items())],
                "heldout": [[row, t, p] for row, (t, p) in sorted(self.heldout.items())]}

    def load_state_dict(self, state: dict) -> None:
        mine = (self.budget, self.selection, self.holdout, self.beside)
        theirs = (state["budget"], state["selection"], state.get("holdout", 0.0),
                  state.get("beside", False))
        if theirs != mine:
            raise ValueError(f"the checkpoint's memory (budget, selection, holdout, beside) "
                             f"{theirs} "
                             f"differs from this one's {mine}")
        self.exemplars = {row: (t, list(p)) for row, t, p in state["exemplars"]}
        self.heldout = {row: (t, list(p)) for row, t, p in state.get("heldout", [])}
