"""What a cache depends on, as named parts, and their hash (the cache's fingerprint).

A cache is valid for a module and dataset when every part matches: the module's
architecture, parameters and buffers; the dataset's type, length and transforms; all its
labels; its origin (the root folder, and every file's path, size and modification time for
file-backed datasets; every byte for in-memory tensors; the indices of subsets); for
deterministic data a hash of sampled items (``verify="sample"``: 1% of them, at least 3,
evenly spaced; ``verify="full"``: all of them); and how the cache stores them."""
from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import torch

from ptcore.cache.transforms import dataset_transforms

__all__ = ["tensor_digest", "module_digest", "dataset_parts", "digest_parts", "explain_change",
           "VERIFY", "SAMPLE_RATE"]

VERIFY = ("sample", "full")
SAMPLE_RATE = 0.01  # share of the samples hashed by verify="sample" (at least 3)


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


def _labels(dataset) -> torch.Tensor | None:
    """All labels without reading a sample, where the dataset (or what it wraps) has them."""
    t = getattr(dataset, "targets", None)
    if t is not None:
        return torch.as_tensor(t, dtype=torch.long)
    if isinstance(dataset, torch.utils.data.Subset):
        base = _labels(dataset.dataset)
        return None if base is None else base[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if isinstance(dataset, torch.utils.data.ConcatDataset):
        parts = [_labels(d) for d in dataset.datasets]
        return None if any(p is None for p in parts) else torch.cat(parts)
    return None


def _origin(dataset, h) -> None:
    """Feed ``h`` with where the data comes from: files (path, size, mtime), root folders,
    in-memory tensors, subset indices, recursively through wrappers."""
    h.update(type(dataset).__qualname__.encode())
    root = getattr(dataset, "root", None)
    if isinstance(root, (str, os.PathLike)):
        h.update(os.path.abspath(root).encode())
    files = getattr(dataset, "samples", None) or getattr(dataset, "imgs", None)
    if isinstance(files, list):
        for item in files:
            path = item[0] if isinstance(item, (tuple, list)) else item
            if isinstance(path, (str, os.PathLike)):
                try:
                    st = os.stat(path)
                    h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}|".encode())
                except OSError:
                    h.update(f"{path}|missing|".encode())
    for attr in ("images", "data", "tensors"):
        value = getattr(dataset, attr, None)
        for t in value if isinstance(value, (tuple, list)) else [value]:
            if isinstance(t, np.ndarray):  # torchvision datasets hold numpy arrays
                t = torch.from_numpy(np.ascontiguousarray(t))
            if isinstance(t, torch.Tensor):
                _update(h, t)
    if isinstance(dataset, torch.utils.data.Subset):
        _update(h, torch.as_tensor(dataset.indices, dtype=torch.long))
        _origin(dataset.dataset, h)
    elif isinstance(dataset, torch.utils.data.ConcatDataset):
        for d in dataset.datasets:
            _origin(d, h)


def _sample_digest(dataset, picks) -> str:
    h = hashlib.sha256()
    for i in picks:
        item = dataset[i]
        for part in item if isinstance(item, (tuple, list)) else [item]:
            if isinstance(part, (torch.Tensor, int, float)):
                _update(h, torch.as_tensor(part))
    return h.hexdigest()


def dataset_parts(dataset, *, probe: bool, verify: str = "sample") -> dict:
    """Type, length, transforms, labels and origin of a dataset; with ``probe``
    (deterministic data), a hash of sampled items (``verify``, see the module docstring),
    which catches changed data that the origin cannot see."""
    if verify not in VERIFY:
        raise ValueError(f"verify must be one of {VERIFY}, got {verify!r}")
    n = len(dataset)
    labels = _labels(dataset)
    origin = hashlib.sha256()
    _origin(dataset, origin)
    parts = {
        "dataset": f"{type(dataset).__module__}.{type(dataset).__qualname__}",
        "length": n,
        "transform": " | ".join(repr(t) for t in dataset_transforms(dataset)),
        "labels": None if labels is None else tensor_digest(labels),
        "origin": origin.hexdigest(),
    }
    if probe and n:
        k = n if verify == "full" else min(n, max(3, math.ceil(n * SAMPLE_RATE)))
        picks = sorted({round(j * (n - 1) / max(k - 1, 1)) for j in range(k)})
        parts["probe"] = _sample_digest(dataset, picks)
        parts["verify"] = verify
    return parts


def digest_parts(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


_WHY = {
    "module": "the frozen module's weights, buffers or structure changed",
    "dataset": "the dataset type changed",
    "length": "the dataset's length changed",
    "transform": "the dataset's transform changed",
    "probe": "the dataset's sampled inputs changed",
    "labels": "the dataset's labels changed",
    "origin": "the dataset's origin changed (root, files, their sizes or times, or data)",
    "verify": "the verification level changed",
    "dtype": "the storage dtype changed",
    "views": "the number of views changed",
    "shard": "the rank/world-size shard changed",
    "format": "the cache file format changed",
}


def explain_change(old: dict, new: dict) -> str:
    """Why a cache built with parts ``old`` does not serve ``new``, in words."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(_WHY.get(k, f"{k} changed") for k in keys) or "nothing changed"
