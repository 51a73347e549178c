"""GDumb (Prabhu et al. 2020, "GDumb: A simple approach that questions our progress in
continual learning"): a greedy sampler keeps a class-balanced memory of the stream, and at
each task the model is retrained from scratch on the memory alone. In ptcore's setting
"scratch" is the run's initial weights: the pretrained backbone (BatchNorm statistics
included) and the head rows the model came with (``classes=``); the rows the run grew are
drawn afresh from a seeded generator, and so is dropout's global generator. What the model
learned on earlier tasks never reaches the next one: only the memory does."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ptcore.data import LabeledSubset, targets_of
from ptcore.models import head_paths
from ptcore.strategies.incremental.memory import union
from ptcore.strategies.incremental.registry import Method, register

__all__ = ["GreedyMemory", "fresh_head", "GDumb"]

_SAMPLER, _HEAD, _DROPOUT = 70_001, 90_001, 110_001  # offsets: one generator each


class GreedyMemory:
    """At most ``budget`` samples of the stream, greedily class-balanced (GDumb's sampler): a
    task's samples arrive in a seeded random order; each is kept while there is room, and
    once the memory is full, a sample whose class holds fewer than budget / classes seen
    (its own counted) evicts a random sample of the currently largest class (the lowest row
    among ties). Samples are positions in their task's training set, as in
    :class:`~.memory.ExemplarMemory`: small to checkpoint, the same on every process."""

    def __init__(self, budget: int, seed: int = 0):
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"memory must be a positive int (samples in all), got {budget!r}")
        self.budget, self.seed = budget, seed
        self.kept: dict[int, tuple[int, list[int]]] = {}  # row -> (task, positions)

    def __len__(self) -> int:
        return sum(len(p) for _, p in self.kept.values())

    def counts(self) -> dict[int, int]:
        return {row: len(p) for row, (_, p) in sorted(self.kept.items())}

    def add(self, task: int, labels: torch.Tensor) -> None:
        """Stream task ``task``'s samples (``labels``: head rows of its training set) in.
        Seeded by (seed, task): a resumed task streams them exactly as before."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + task + _SAMPLER)
        labels = torch.as_tensor(labels).tolist()
        size = len(self)
        for i in torch.randperm(len(labels), generator=g).tolist():
            row = labels[i]
            owner, positions = self.kept.setdefault(row, (task, []))
            if owner != task:
                raise ValueError(f"row {row} came with task {owner} and again with task {task}")
            if size < self.budget:
                size += 1
            elif len(positions) < self.budget / len(self.kept):
                largest = max(self.kept, key=lambda r: (len(self.kept[r][1]), -r))
                victims = self.kept[largest][1]
                victims.pop(int(torch.randint(len(victims), (1,), generator=g)))
            else:
                continue
            positions.append(i)

    def datasets(self, task_data: list) -> list[LabeledSubset]:
        """The memory as subsets of its tasks' training sets (``task_data[t]``)."""
        by_task: dict[int, list[int]] = {}
        for task, positions in self.kept.values():
            by_task.setdefault(task, []).extend(positions)
        return [LabeledSubset(task_data[t], sorted(p)) for t, p in sorted(by_task.items()) if p]

    def state_dict(self) -> dict:
        return {"budget": self.budget,
                "kept": [[row, t, list(p)] for row, (t, p) in sorted(self.kept.items())]}

    def load_state_dict(self, state: dict) -> None:
        if state["budget"] != self.budget:
            raise ValueError(f"the checkpoint's GDumb memory holds {state['budget']} samples, "
                             f"this run's {self.budget}")
        self.kept = {row: (t, list(p)) for row, t, p in state["kept"]}


def fresh_head(head: nn.Module, seed: int, keep: dict[str, torch.Tensor] | None = None) -> None:
    """Re-initialise ``head`` (a Linear or 1×1 Conv2d) in place as PyTorch initialises one,
    drawn from generators seeded by ``seed`` (row r gets the same values whatever the
    width: CPU draws are sequential), then copy the rows of ``keep`` ({"weight", "bias"}:
    the initial head's) over its first rows."""
    weight = torch.empty(head.weight.shape, dtype=torch.float32)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5),
                             generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        head.weight.copy_(weight)
        if head.bias is not None:  # a generator of its own: the weights' count varies
            bound = 1 / math.sqrt(weight[0].numel())
            g = torch.Generator().manual_seed(seed + 1)
            head.bias.copy_(torch.empty(head.bias.shape).uniform_(-bound, bound, generator=g))
        for name, value in (keep or {}).items():
            getattr(head, name)[: len(value)] = value


@register
class GDumb(Method):
    name = "gdumb"
    help = ("alone: a greedy class-balanced memory of the stream (memory samples in all); "
            "each task retrains from the initial weights on the memory only")
    alone = True
    state_key = "gdumb"

    def __init__(self, options, parts):
        super().__init__(options, parts)
        self.memory = GreedyMemory(options.memory, options.seed)
        self.seed = options.seed
        self.initial: dict[str, torch.Tensor] | None = None  # the model as the run began (CPU)

    def before_task(self, run, t, train):
        if self.initial is None:  # a run's first task (a resumed run loads it)
            brought = sum(map(len, run.plan.task_classes))
            if self.memory.budget < brought:
                raise ValueError(f"memory={self.memory.budget} is smaller than the {brought} "
                                 "classes the tasks bring: gdumb needs a sample of each")
            self.initial = {k: v.detach().to("cpu", copy=True)
                            for k, v in run.model.model.state_dict().items()}
        self.memory.add(t, targets_of(train[t]))

    def train_data(self, run, t, train, data):
        self.reset(run.model.model, run.initial_classes is not None)
        torch.manual_seed(self.seed * 100_003 + t + _DROPOUT)
        return union(self.memory.datasets(train)), 0

    def reset(self, model: nn.Module, keep_rows: bool) -> None:
        """``model`` (its head grown to the run's rows) back to the initial weights; the head
        fresh, with the initial head's rows first when they hold classes of the run."""
        paths = head_paths(model)
        heads = {f"{p}.{n}" for p in paths for n in ("weight", "bias")}
        with torch.no_grad():
            for key, value in model.state_dict().items():
                if key not in heads:
                    value.copy_(self.initial[key])
        for i, path in enumerate(paths):
            keep = {n: self.initial[f"{path}.{n}"] for n in ("weight", "bias")
                    if f"{path}.{n}" in self.initial} if keep_rows else None
            fresh_head(model.get_submodule(path), self.seed * 100_003 + 2 * i + _HEAD,
                       keep)

    def exemplars(self):
        return len(self.memory)

    def state_dict(self):
        return {"memory": self.memory.state_dict(), "initial": self.initial}

    def load_state_dict(self, state, device):
        self.memory.load_state_dict(state["memory"])
        self.initial = state["initial"]
