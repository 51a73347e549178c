"""What a cache depends on, as named parts, and their hash (the cache's fingerprint).

A cache is valid for a module and dataset when every part matches: the module's
architecture, parameters and buffers; the dataset's type, length, transforms and (for
deterministic data) a few sample inputs; and how the cache stores them."""
from __future__ import annotations

import hashlib
import json

import torch

from ptcore.cache.transforms import dataset_transforms

__all__ = ["tensor_digest", "module_digest", "dataset_parts", "digest_parts", "explain_change"]


def _update(h, t: torch.Tensor) -> None:
    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def tensor_digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        _update(h, t)
    return h.hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """Hash of the module's structure (its repr), parameters and buffers, by name."""
    h = hashlib.sha256(repr(module).encode())
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        h.update(name.encode())
        _update(h, t)
    return h.hexdigest()


def _first(item):
    return item[0] if isinstance(item, (tuple, list)) else item


def dataset_parts(dataset, *, probe: bool) -> dict:
    """Type, length and transforms of a dataset; with ``probe``, a hash of three inputs
    (first, middle, last), which catches changed data behind an unchanged transform."""
    n = len(dataset)
    parts = {
        "dataset": f"{type(dataset).__module__}.{type(dataset).__qualname__}",
        "length": n,
        "transform": " | ".join(repr(t) for t in dataset_transforms(dataset)),
    }
    if probe and n:
        picks = sorted({0, n // 2, n - 1})
        parts["probe"] = tensor_digest(*(torch.as_tensor(_first(dataset[i])) for i in picks))
    return parts


def digest_parts(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


_WHY = {
    "module": "the frozen module's weights, buffers or structure changed",
    "dataset": "the dataset type changed",
    "length": "the dataset's length changed",
    "transform": "the dataset's transform changed",
    "probe": "the dataset's inputs changed",
    "dtype": "the storage dtype changed",
    "views": "the number of views changed",
    "shard": "the rank/world-size shard changed",
    "format": "the cache file format changed",
}


def explain_change(old: dict, new: dict) -> str:
    """Why a cache built with parts ``old`` does not serve ``new``, in words."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(_WHY.get(k, f"{k} changed") for k in keys) or "nothing changed"
