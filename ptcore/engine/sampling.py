"""What each training batch holds and the random numbers it is loaded with, as functions
of (seed, epoch, rank, batch index) alone, so a run resumed in the middle of an epoch goes
on exactly as an uninterrupted one (docs/logging.md, "Which checkpoints are written and kept").

:class:`EpochBatches` cuts this rank's share of an epoch (``DistributedSampler``'s order,
seeded by (seed, epoch), in one process too) into batches and starts at a given batch:
resuming skips the batches already trained without loading them.

:class:`SeededBatches` loads each batch with torch's (CPU) and Python's global random
generators seeded from the batch's key, in a worker or in the main process (whose own
generators are restored afterwards). Random augmentations then depend neither on the
number of workers nor on which worker loads a batch, nor on where a run was resumed; and
loading draws nothing from the training process's generators (dropout's). torchvision's
transforms draw from these two (Python's for v1 RandomChoice/RandomOrder). NumPy's global
generator is left alone: saving and restoring its state costs ~0.7 ms a batch, against
~0.13 ms for torch's and Python's together (measured on a shared 2-core machine), which
would show when training from cached features; PyTorch seeds it once per worker, so
augmentations drawing from NumPy are not reproduced across resumes or worker counts.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import random

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler, get_worker_info

__all__ = ["EpochBatches", "SeededBatches"]


class EpochBatches(Sampler):
    """Batches of (key, indices) for one rank of ``world``; set the epoch (and the first
    batch) with :meth:`set_epoch` before each pass."""

    def __init__(self, data, batch_size: int, *, seed: int, drop_last: bool, rank: int = 0,
                 world: int = 1):
        self.order = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True,
                                        seed=seed, drop_last=drop_last)
        self.batch_size, self.drop_last, self.seed, self.rank = batch_size, drop_last, seed, rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.order.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    @property
    def per_epoch(self) -> int:
        """Batches in a whole epoch."""
        n = len(self.order)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def key(self, batch: int) -> int:
        """The seed batch ``batch`` is loaded with: a hash of (seed, epoch, rank, batch),
        stable across processes and Python versions (``hash()`` is not)."""
        text = f"{self.seed}/{self.epoch}/{self.rank}/{batch}".encode()
        return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1

    def __len__(self) -> int:
        return self.per_epoch - self.start

    def __iter__(self):
        order = list(self.order)
        for b in range(self.start, self.per_epoch):
            yield self.key(b), order[b * self.batch_size:(b + 1) * self.batch_size]


def _seed(key: int) -> None:
    torch.default_generator.manual_seed(key)  # the CPU's only: torch.manual_seed is slow
    random.seed(key)


@contextlib.contextmanager
def _seeded(key: int):
    if get_worker_info() is not None:  # a worker's generators are its own
        _seed(key)
        yield
        return
    saved = torch.default_generator.get_state(), random.getstate()
    _seed(key)
    try:
        yield
    finally:
        torch.default_generator.set_state(saved[0])
        random.setstate(saved[1])


class SeededBatches(Dataset):
    """``data`` read a batch at a time (its ``__getitems__`` when it has one) under the
    batch's seed; DataLoader hands each (key, indices) from :class:`EpochBatches` to
    :meth:`__getitems__`."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i]

    def __getitems__(self, batch):
        key, indices = batch
        with _seeded(key):
            getitems = getattr(self.data, "__getitems__", None)
            return getitems(indices) if getitems else [self.data[i] for i in indices]
