"""Deterministic splits by seed: train/val/test, class subsets and class-incremental tasks,
k-shot subsets with their unlabelled remainder. Each split is a :class:`LabeledSubset`
that knows its labels (``.targets``), so splits compose (k-shot of a class subset of a
train split) without loading any image."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Subset

from ptcore.data.folders import is_deterministic

__all__ = ["targets_of", "LabeledSubset", "train_val_test_split", "class_subset",
           "class_tasks", "k_shot", "hide_labels"]


def targets_of(dataset) -> torch.Tensor:
    """int64 labels of every sample: from ``.targets`` when the dataset has them (ptcore
    datasets, ImageFolder, most torchvision datasets), else by reading every sample."""
    t = getattr(dataset, "targets", None)
    if t is not None:
        return torch.as_tensor(t, dtype=torch.long)
    if hasattr(dataset, "dataset") and hasattr(dataset, "indices"):  # torch Subset
        return targets_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


class LabeledSubset(Subset):
    """``dataset`` restricted to ``indices``, labels optionally renumbered by ``label_map``
    (old label → new label), or replaced by ``fill_label`` (hidden labels). A torch Subset,
    so code that looks through Subsets (e.g. for transforms) sees the dataset inside."""

    def __init__(self, dataset, indices, *, label_map: dict[int, int] | None = None,
                 fill_label: int | None = None):
        super().__init__(dataset, torch.as_tensor(indices, dtype=torch.long))
        self.label_map = label_map
        self.fill_label = fill_label
        base = targets_of(dataset)[self.indices]
        if fill_label is not None:
            base = torch.full_like(base, fill_label)
        elif label_map is not None:
            base = torch.tensor([label_map[int(y)] for y in base], dtype=torch.long)
        self.targets = base
        self.deterministic = is_deterministic(dataset)

    def __getitem__(self, i):
        x, _ = self.dataset[int(self.indices[i])]
        return x, self.targets[i]

    def __getitems__(self, indices):
        idx = [int(self.indices[i]) for i in indices]
        getitems = getattr(self.dataset, "__getitems__", None)
        samples = getitems(idx) if getitems else [self.dataset[j] for j in idx]
        return [(x, self.targets[i]) for (x, _), i in zip(samples, indices)]


def _generator(seed: int) -> torch.Generator:
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _by_class(targets: torch.Tensor, g: torch.Generator) -> dict[int, torch.Tensor]:
    """Sample positions of each class, each list shuffled by ``g``."""
    groups = {}
    for c in targets.unique(sorted=True).tolist():
        idx = (targets == c).nonzero().flatten()
        groups[c] = idx[torch.randperm(len(idx), generator=g)]
    return groups


def train_val_test_split(dataset, val: float = 0.15, test: float = 0.15, *, seed: int = 0,
                         stratify: bool = True):
    """(train, val, test) subsets with the given fractions, the same for the same seed.
    ``stratify`` keeps class proportions (each class split separately)."""
    for name, f in (("val", val), ("test", test)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1), got {f!r}")
    if val + test >= 1.0:
        raise ValueError(f"val + test must be < 1, got {val + test}")
    g = _generator(seed)
    targets = targets_of(dataset)
    groups = (_by_class(targets, g).values() if stratify
              else [torch.randperm(len(targets), generator=g)])
    parts: list[list[torch.Tensor]] = [[], [], []]
    for idx in groups:
        n_val, n_test = round(len(idx) * val), round(len(idx) * test)
        for part, chunk in zip(parts, idx.split([len(idx) - n_val - n_test, n_val, n_test])):
            part.append(chunk)
    return tuple(LabeledSubset(dataset, torch.cat(p).sort().values) for p in parts)


def class_subset(dataset, classes: Sequence[int], *, relabel: bool = True) -> LabeledSubset:
    """Samples of ``classes`` only; with ``relabel`` their labels become 0…len(classes)-1 in
    the order given (a new task's head), else they keep their labels (class-incremental)."""
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list without repeats, got {classes}")
    targets = targets_of(dataset)
    missing = set(classes) - set(targets.tolist())
    if missing:
        raise ValueError(f"classes {sorted(missing)} have no samples in this dataset")
    keep = torch.isin(targets, torch.tensor(classes)).nonzero().flatten()
    label_map = {c: i for i, c in enumerate(classes)} if relabel else None
    return LabeledSubset(dataset, keep, label_map=label_map)


def class_tasks(dataset, tasks: int | Sequence[Sequence[int]], *,
                relabel: bool = False) -> list[LabeledSubset]:
    """Class-incremental tasks: ``tasks`` is a number (the sorted classes cut into that many
    equal consecutive groups) or explicit class lists. Labels stay global by default."""
    classes = targets_of(dataset).unique(sorted=True).tolist()
    if isinstance(tasks, int):
        if not 1 <= tasks <= len(classes) or len(classes) % tasks:
            raise ValueError(f"tasks={tasks} must divide the {len(classes)} classes evenly")
        size = len(classes) // tasks
        tasks = [classes[i:i + size] for i in range(0, len(classes), size)]
    return [class_subset(dataset, t, relabel=relabel) for t in tasks]


def k_shot(dataset, k: int, *, seed: int = 0) -> tuple[LabeledSubset, LabeledSubset]:
    """(``k`` samples of every class, all the other samples). The remainder is the
    unlabelled pool of semi-supervised distillation (see :func:`hide_labels`)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    per_class = _by_class(targets_of(dataset), _generator(seed))
    short = {c: len(i) for c, i in per_class.items() if len(i) < k}
    if short:
        raise ValueError(f"k={k} but classes have fewer samples: {short}")
    shots = torch.cat([i[:k] for i in per_class.values()]).sort().values
    rest = torch.cat([i[k:] for i in per_class.values()]).sort().values
    return LabeledSubset(dataset, shots), LabeledSubset(dataset, rest)


def hide_labels(dataset, ignore_index: int = -100) -> LabeledSubset:
    """``dataset`` with every label replaced by ``ignore_index`` (losses skip them)."""
    return LabeledSubset(dataset, torch.arange(len(dataset)), fill_label=ignore_index)
