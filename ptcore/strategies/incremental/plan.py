"""The class plan of an incremental run: which head row holds which class, which rows each
task owns, and the checks that reject a bad sequence before any training."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ptcore.data import LabeledSubset, targets_of

__all__ = ["Plan", "make_plan"]


@dataclass(frozen=True)
class Plan:
    classes: list[int]             # class id of each head row, in row order
    task_classes: list[list[int]]  # class ids of each task
    spans: list[tuple[int, int]]   # head rows [start, stop) of each task
    skip_first: bool               # the model's head already holds task 0: nothing to learn

    def row_of(self) -> dict[int, int]:
        return {c: r for r, c in enumerate(self.classes)}

    def row_task(self) -> torch.Tensor:
        """Task index of each head row (-1 for rows of classes no task brings)."""
        out = torch.full((len(self.classes),), -1, dtype=torch.long)
        for t, (a, b) in enumerate(self.spans):
            out[a:b] = t
        return out

    def remap(self, data) -> LabeledSubset:
        """``data`` with labels turned into head rows."""
        return LabeledSubset(data, torch.arange(len(data)), label_map=self.row_of())


def _labels(data, what: str) -> list[int]:
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(f"{what} must be a map-style dataset, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{what} is empty")
    labels = targets_of(data).unique(sorted=True).tolist()
    if labels[0] < 0:
        raise ValueError(f"{what} has labels {[c for c in labels if c < 0]}: the head cannot "
                         "hold negative classes (hidden labels have no place in a task)")
    return labels


def make_plan(train_tasks, test_tasks, initial: list[int] | None, head_size: int) -> Plan:
    """Check the tasks and lay out the head. ``initial``: the classes the model's head
    already holds, in row order (None: the head is replaced by the first task's classes)."""
    for name, tasks in (("train_tasks", train_tasks), ("test_tasks", test_tasks)):
        if not isinstance(tasks, (list, tuple)) or not tasks:
            raise TypeError(f"{name} must be a non-empty list of datasets, one per task")
    if len(test_tasks) != len(train_tasks):
        raise ValueError(f"test_tasks has {len(test_tasks)} datasets for "
                         f"{len(train_tasks)} training tasks")
    task_classes = [_labels(d, f"train_tasks[{t}]") for t, d in enumerate(train_tasks)]
    for t, d in enumerate(test_tasks):
        extra = sorted(set(_labels(d, f"test_tasks[{t}]")) - set(task_classes[t]))
        if extra:
            raise ValueError(f"test_tasks[{t}] has classes {extra} that train_tasks[{t}] lacks")
    if initial is not None and len(initial) != head_size:
        raise ValueError(f"classes lists {len(initial)} classes but the model's head has "
                         f"{head_size} outputs: it cannot hold them")
    skip_first = initial is not None and sorted(initial) == task_classes[0]
    seen = {c: "the model's head (classes=)" for c in (initial or [])}
    classes = list(initial or [])
    spans = []
    for t, cs in enumerate(task_classes):
        if t == 0 and skip_first:
            spans.append((0, len(classes)))
            continue
        clash = sorted(c for c in cs if c in seen)
        if clash:
            raise ValueError(f"train_tasks[{t}] repeats classes {clash} of {seen[clash[0]]}; "
                             "tasks must bring disjoint sets of classes")
        seen.update({c: f"train_tasks[{t}]" for c in cs})
        spans.append((len(classes), len(classes) + len(cs)))
        classes.extend(cs)
    return Plan(classes, task_classes, spans, skip_first)
