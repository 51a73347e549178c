"""Exemplar memory for replay: a fixed budget of training samples, split evenly over the
classes seen so far (class-balanced), chosen by herding in feature space (iCaRL) or at
random. Exemplars are kept as positions in their task's training set, so the memory is
small to checkpoint and identical on every process."""
from __future__ import annotations

import torch
import torch.distributed as dist

from ptcore.data import LabeledSubset, targets_of
from ptcore.engine import distributed as D
from ptcore.strategies._incr_features import embed

__all__ = ["SELECTIONS", "herding", "ExemplarMemory"]

SELECTIONS = ("herding", "random")


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
    """At most ``budget`` exemplars, ``budget // classes_seen`` per class."""

    def __init__(self, budget: int, selection: str = "herding", seed: int = 0):
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(f"memory must be a positive int (exemplars in all), got {budget!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        self.budget, self.selection, self.seed = budget, selection, seed
        self.exemplars: dict[int, tuple[int, list[int]]] = {}  # row -> (task, positions)

    def __len__(self) -> int:
        return sum(len(p) for _, p in self.exemplars.values())

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
        quota = self.budget // (len(self.exemplars) + len(rows))
        targets = targets_of(data)
        chosen = {}
        if D.is_main():
            for row in rows:
                positions = (targets == row).nonzero().flatten()
                m = min(quota, len(positions))
                chosen[row] = (task, self._choose(model, data, positions, row, m, device,
                                                  num_workers).tolist())
        if D.is_distributed():
            box = [chosen]
            dist.broadcast_object_list(box, src=0)
            chosen = box[0]
        self.exemplars.update(chosen)
        for row, (t, p) in self.exemplars.items():
            self.exemplars[row] = (t, p[:quota])

    def datasets(self, task_data: list) -> list[LabeledSubset]:
        """The exemplars as subsets of their tasks' training sets (``task_data[t]``)."""
        by_task: dict[int, list[int]] = {}
        for task, positions in self.exemplars.values():
            by_task.setdefault(task, []).extend(positions)
        return [LabeledSubset(task_data[t], sorted(p)) for t, p in sorted(by_task.items())]

    def state_dict(self) -> dict:
        return {"budget": self.budget, "selection": self.selection,
                "exemplars": [[row, t, p] for row, (t, p) in sorted(self.exemplars.items())]}

    def load_state_dict(self, state: dict) -> None:
        if (state["budget"], state["selection"]) != (self.budget, self.selection):
            raise ValueError(f"the checkpoint's memory (budget {state['budget']}, "
                             f"{state['selection']}) differs from this one's (budget "
                             f"{self.budget}, {self.selection})")
        self.exemplars = {row: (t, list(p)) for row, t, p in state["exemplars"]}
