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

__all__ = ["EpochBatches", "InOrderBatches", "SeededBatches"]


def _key(text: str) -> int:
    """A seed from ``text``, stable across processes and Python versions (``hash()`` is
    not)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


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
        return _key(f"{self.seed}/{self.epoch}/{self.rank}/{batch}")

    def __len__(self) -> int:
        return self.per_epoch - self.start

    def __iter__(self):
        order = list(self.order)
        for b in range(self.start, self.per_epoch):
            yield self.key(b), order[b * self.batch_size:(b + 1) * self.batch_size]


class InOrderBatches(Sampler):
    """Batches of (key, indices) over ``range(n)`` in order, each batch's key a function of
    its position alone: what every loader but the training one reads with (evaluation,
    caches, Fisher, herding), so that data with random transforms reads the same whatever
    the number of workers, and reading it draws nothing from the process's generators."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        for b, start in enumerate(range(0, self.n, self.batch_size)):
            yield _key(f"in-order/{b}"), list(range(start, min(start + self.batch_size, self.n)))


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
