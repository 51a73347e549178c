"""The data a distilled student trains on: labelled and unlabelled samples in one dataset
(unlabelled ones carry ``ignore_index``), that dataset zipped with a teacher cache, and
with each item's index (for terms that keep per-sample state)."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ptcore.data import hide_labels, is_deterministic, targets_of

__all__ = ["PseudoLabelData", "WithTeacherRows", "WithIndex"]


def _fetch(dataset, indices: list[int]) -> list:
    getitems = getattr(dataset, "__getitems__", None)
    return getitems(indices) if getitems else [dataset[i] for i in indices]


class PseudoLabelData(Dataset):
    """``labelled`` then ``unlabelled`` (its labels replaced by ``ignore_index``, so that
    no true label of the unlabelled pool can leak into training) as one dataset of
    ``(x, y)``; ``.targets`` and ``.deterministic`` as ptcore's splits have them."""

    def __init__(self, labelled, unlabelled=None, *, ignore_index: int = -100):
        self.parts = [labelled] + ([hide_labels(unlabelled, ignore_index)]
                                   if unlabelled is not None and len(unlabelled) else [])
        self.offsets = [0]
        for part in self.parts:
            self.offsets.append(self.offsets[-1] + len(part))
        self.targets = torch.cat([targets_of(p) for p in self.parts])
        self.deterministic = all(is_deterministic(p) for p in self.parts)
        self.num_labelled = len(labelled)

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]):
        # Fetch each part's share in one batched call (the parts vectorise their reads).
        out: list = [None] * len(indices)
        for p, part in enumerate(self.parts):
            lo, hi = self.offsets[p], self.offsets[p + 1]
            where = [j for j, i in enumerate(indices) if lo <= i < hi]
            if where:
                items = _fetch(part, [indices[j] - lo for j in where])
                for j, (x, _) in zip(where, items):
                    out[j] = (x, self.targets[indices[j]])
        return out


class WithTeacherRows(Dataset):
    """Items ``(*item, teacher_row)``: ``dataset``'s item (``(x, y)``, or with more fields)
    with the teacher's cached output for it (one gather per batch). Distillation's cached
    teacher and LwF's cached snapshot both read through it."""

    def __init__(self, dataset, cache):
        self.dataset, self.cache = dataset, cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]):
        rows = self.cache.get(indices, device="cpu")
        return [(*item, r) for item, r in zip(_fetch(self.dataset, indices), rows)]


class WithIndex(Dataset):
    """Items ``(*item, i)``: ``dataset``'s item ``i`` followed by ``i``, which a batch carries as
    an int64 tensor (CRD's memory bank keeps one row per training sample)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]):
        return [(*item, i) for item, i in zip(_fetch(self.dataset, indices), indices)]
