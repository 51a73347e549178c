"""The on-disk cache: raw row files plus a JSON manifest, written so that a reader never
sees a half-written cache, and an interrupted build can resume.

Layout of a cache directory:
    features.bin   rows × row_bytes, row-major (int8 codes or float16/bfloat16/float32)
    scales.bin     rows × float32 (int8 caches only)
    labels.bin     samples × int64 (datasets with labels only)
    meta.json      parts, shape, dtype, sizes and a SHA-256 per file; written last
While building, the .bin files are ``*.partial`` and ``progress.json`` records how many
rows are durably on disk (it is written only after those rows are fsync'ed).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

import torch

__all__ = ["FORMAT", "atomic_write_json", "read_json", "PartialWriter", "load_verified",
           "CacheFileError"]

FORMAT = 1
FILES = ("features", "scales", "labels")
_CHUNK = 1 << 24


class CacheFileError(RuntimeError):
    """A cache file is missing, truncated or does not match its checksum."""


def atomic_write_json(path: str, obj: dict) -> None:
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


class PartialWriter:
    """Appends rows to ``<dir>/*.bin.partial``; ``commit`` makes them durable and records
    them in progress.json; ``finish`` checksums, renames and writes meta.json."""

    def __init__(self, directory: str, progress: dict, rows_done: int, samples_done: int):
        self.dir = directory
        self.progress = progress  # parts, row_bytes, sample_shape, ... (what a resume needs)
        self.rows_done = rows_done
        self.samples_done = samples_done
        self._files = {}
        sizes = {"features": rows_done * progress["row_bytes"], "scales": rows_done * 4,
                 "labels": samples_done * 8}
        for name in self._names():
            p = self._path(name, partial=True)
            have = os.path.getsize(p) if os.path.exists(p) else 0
            if have < sizes[name]:
                self.close()
                raise CacheFileError(f"{p} holds {have} bytes, fewer than the {sizes[name]} "
                                     "its progress record promises")
            f = open(p, "r+b" if os.path.exists(p) else "w+b")
            f.truncate(sizes[name])  # drop rows written after the last commit
            f.seek(sizes[name])
            self._files[name] = f

    def _names(self):
        names = ["features"]
        if self.progress["dtype"] == "int8":
            names.append("scales")
        if self.progress["has_labels"]:
            names.append("labels")
        return names

    def _path(self, name: str, partial: bool) -> str:
        return os.path.join(self.dir, f"{name}.bin" + (".partial" if partial else ""))

    def append(self, features: torch.Tensor, scales: torch.Tensor | None,
               labels: torch.Tensor | None) -> None:
        self._files["features"].write(_bytes(features))
        if scales is not None:
            self._files["scales"].write(_bytes(scales))
        if labels is not None and labels.numel():
            self._files["labels"].write(_bytes(labels.to(torch.int64)))
            self.samples_done += labels.numel()
        self.rows_done += features.shape[0]

    def commit(self) -> None:
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
        atomic_write_json(os.path.join(self.dir, "progress.json"),
                          dict(self.progress, rows_done=self.rows_done,
                               samples_done=self.samples_done))

    def finish(self, meta: dict) -> dict:
        self.commit()
        files = {}
        for name, f in self._files.items():
            f.close()
            partial = self._path(name, partial=True)
            files[name] = {"bytes": os.path.getsize(partial), "sha256": _sha256(partial)}
            os.replace(partial, self._path(name, partial=False))
        meta = dict(meta, format=FORMAT, files=files)
        atomic_write_json(os.path.join(self.dir, "meta.json"), meta)
        os.unlink(os.path.join(self.dir, "progress.json"))
        return meta

    def close(self) -> None:
        for f in self._files.values():
            f.close()


_DTYPES = {"int8": torch.int8, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float32": torch.float32, "int64": torch.int64}


def load_verified(directory: str, meta: dict) -> dict[str, torch.Tensor]:
    """The cache's tensors, memory-mapped (copy-on-write) from files whose size and SHA-256
    match ``meta``; raises CacheFileError otherwise, so a damaged cache is never served."""
    rows, width = meta["rows"], meta["row_elems"]
    shapes = {"features": ((rows, width), meta["dtype"]), "scales": ((rows,), "float32"),
              "labels": ((meta["samples"],), "int64")}
    out = {}
    for name, info in meta["files"].items():
        path = os.path.join(directory, f"{name}.bin")
        shape, dt = shapes[name]
        dtype = _DTYPES[dt]
        want = info["bytes"]
        size = os.path.getsize(path) if os.path.exists(path) else None
        expected = dtype.itemsize * (shape[0] * (shape[1] if len(shape) > 1 else 1))
        if size != want or want != expected:
            raise CacheFileError(f"{path} has {size} bytes, expected {expected} "
                                 "(truncated or overwritten)")
        if _sha256(path) != info["sha256"]:
            raise CacheFileError(f"{path} does not match its SHA-256 checksum (corrupted)")
        n = shape[0] * (shape[1] if len(shape) > 1 else 1)
        t = torch.from_file(path, shared=False, size=n, dtype=dtype) if n else \
            torch.empty(0, dtype=dtype)
        out[name] = t.view(shape)
    return out
