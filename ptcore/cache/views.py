"""Ways to read a built FeatureCache for training: a batch loader and a map-style Dataset."""
from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

__all__ = ["CacheLoader", "CacheDataset"]


class CacheLoader:
    """Batches ``(features, labels)`` of one epoch, each gathered by one fused op call.
    ``length`` samples per pass: len(cache), or more where shards are padded to equal size."""

    def __init__(self, cache, batch_size: int, *, shuffle: bool, generator, drop_last: bool,
                 epoch: int, length: int):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.cache, self.batch_size, self.shuffle = cache, batch_size, shuffle
        self.generator, self.drop_last, self.epoch, self.length = generator, drop_last, epoch, length

    def __len__(self) -> int:
        return (self.length // self.batch_size if self.drop_last
                else math.ceil(self.length / self.batch_size))

    def __iter__(self):
        n = len(self.cache)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if self.length > n:
            order = order.repeat(math.ceil(self.length / n))[:self.length]
        labels = self.cache.labels
        for i in range(len(self)):
            pos = order[i * self.batch_size:(i + 1) * self.batch_size]
            feats = self.cache.get(pos, epoch=self.epoch)
            yield feats, None if labels is None else labels[pos].to(feats.device, non_blocking=True)


class CacheDataset(Dataset):
    """Item i: ``(feature [*sample_shape] float32, label)`` on the CPU at a fixed epoch.
    DataLoader fetches a whole batch through ``__getitems__``: one gather per batch."""

    def __init__(self, cache, epoch: int):
        self.cache, self.epoch = cache, epoch

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]):
        feats = self.cache.get(indices, epoch=self.epoch, device="cpu")
        labels = self.cache.labels
        if labels is None:
            return list(feats)
        return list(zip(feats, labels[torch.as_tensor(indices, dtype=torch.int64)]))
