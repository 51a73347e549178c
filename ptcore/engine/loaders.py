"""The one place DataLoaders are built: training and evaluation in the loop, feature and
teacher caches, EWC's Fisher, herding and class means (see docs/logging.md, "Input
pipeline").

``num_workers``: worker processes that load (decode, transform) batches while the model
computes; 0 loads in the calling process, "auto" takes the CPUs this process may use, at
most 8 (beyond that, decoding rarely sets the pace and each worker holds a copy of the
dataset object). Workers persist across the epochs of one loader, and page-locked
(pinned) batches let the copy to a CUDA device overlap compute."""
from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader

from ptcore.engine.sampling import InOrderBatches, SeededBatches

__all__ = ["MAX_AUTO_WORKERS", "resolve_num_workers", "check_num_workers", "make_loader"]

MAX_AUTO_WORKERS = 8


def check_num_workers(num_workers) -> None:
    if num_workers == "auto":
        return
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0 or 'auto', got {num_workers!r}")


def resolve_num_workers(num_workers) -> int:
    """``num_workers`` as a count ("auto": the CPUs available to this process, capped)."""
    check_num_workers(num_workers)
    if num_workers != "auto":
        return num_workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(MAX_AUTO_WORKERS, (cpus or 1)))


def make_loader(data, batch_size: int = 1, *, batch_sampler=None, num_workers=0,
                device=None) -> DataLoader:
    """Batches of ``data`` in order, each read under a seed of its own
    (:class:`~ptcore.engine.sampling.InOrderBatches`), or ``batch_sampler``'s batches,
    loaded by ``num_workers`` workers that persist across epochs, pinned when ``device`` is
    a CUDA device. Random transforms then give the same batches whatever the number of
    workers, and the workers' base seed comes from the loader's own generator, never from
    the global one: building or iterating a loader leaves the training's random numbers
    untouched."""
    workers = resolve_num_workers(num_workers)
    cuda = device is not None and torch.device(device).type == "cuda"
    if batch_sampler is None:
        data, batch_sampler = SeededBatches(data), InOrderBatches(len(data), batch_size)
    return DataLoader(data, batch_sampler=batch_sampler, num_workers=workers, pin_memory=cuda,
                      persistent_workers=workers > 0, generator=torch.Generator())
