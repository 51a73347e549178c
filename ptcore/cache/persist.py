"""The on-disk cache: raw row files plus a JSON manifest, written so that a reader never
sees a half-written cache, and an interrupted build can resume.

Layout of a cache directory:
    features.bin   rows × row_bytes, row-major (int8 codes or float16/bfloat16/float32)
    scales.bin     rows × float32 (int8 caches only)
    labels.bin     samples × int64 (datasets with labels only)
    meta.json      parts, shape, dtype, sizes and a SHA-256 per file; written last
    .ptcore-cache  the marker: ptcore writes, deletes and overwrites only in directories
                   that hold it (or that are empty when the cache claims them)
    .lock          flock'ed while a process builds or loads: a second builder waits, then
                   reuses what the first wrote
While building, the .bin files are ``*.partial`` and ``progress.json`` records how many
rows are durably on disk and the SHA-256 of those bytes (it is written only after those
rows are fsync'ed); a resumed build re-verifies them before appending.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from contextlib import contextmanager

import torch

from ptcore.runtime.files import atomic_write_json, fsync_dir, remove_stale_temps
from ptcore.errors import UserError

__all__ = ["FORMAT", "read_json", "PartialWriter", "load_verified", "CacheFileError",
           "CacheDirError", "claim_directory", "directory_lock", "MARKER"]

FORMAT = 1
FILES = ("features", "scales", "labels")
MARKER = ".ptcore-cache"
_OWN = {"meta.json", "progress.json", ".lock", MARKER} | {
    f"{n}.bin{p}" for n in FILES for p in ("", ".partial")}
_CHUNK = 1 << 24


class CacheFileError(UserError, RuntimeError):
    """A cache file is missing, truncated or does not match its checksum."""


class CacheDirError(UserError, ValueError):
    """A cache path that is not (and cannot become) a ptcore cache directory."""


def read_json(path: str) -> dict | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def claim_directory(directory: str) -> None:
    """Make ``directory`` a ptcore cache directory (create it, write the marker), or refuse
    one that holds anything else: the cache deletes and overwrites files in it."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise CacheDirError(f"cache path {directory!r} is a file, not a directory")
    os.makedirs(directory, exist_ok=True)
    if os.path.exists(os.path.join(directory, MARKER)):
        return
    foreign = sorted(n for n in os.listdir(directory)
                     if n not in _OWN and not n.endswith(".tmp"))
    if foreign:
        raise CacheDirError(f"cache path {directory!r} is not a ptcore cache directory (no "
                            f"{MARKER} marker; it holds {', '.join(foreign[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}); give an empty or new "
                            "directory")
    with open(os.path.join(directory, MARKER), "w") as f:
        f.write("ptcore feature cache: files here are managed by ptcore.FeatureCache\n")
    fsync_dir(directory)


@contextmanager
def directory_lock(directory: str):
    """An exclusive lock on the cache directory (POSIX flock; a no-op elsewhere); temp
    files a killed writer left are removed once it is held."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        remove_stale_temps(directory)
        yield
    finally:
        os.close(fd)  # releases the lock


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def _prefix_hash(f, size: int):
    """A SHA-256 object fed with the first ``size`` bytes of the open file ``f``."""
    h = hashlib.sha256()
    f.seek(0)
    left = size
    while left:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h


class PartialWriter:
    """Appends rows to ``<dir>/*.bin.partial``; ``commit`` makes them durable and records
    them (with the SHA-256 of the bytes so far) in progress.json; ``finish`` renames the
    files and writes meta.json. Resuming re-verifies the committed bytes."""

    def __init__(self, directory: str, progress: dict, rows_done: int, samples_done: int):
        self.dir = directory
        self.progress = progress  # parts, row_bytes, sample_shape, ... (what a resume needs)
        self.rows_done = rows_done
        self.samples_done = samples_done
        self._files, self._hashes = {}, {}
        sizes = {"features": rows_done * progress["row_bytes"], "scales": rows_done * 4,
                 "labels": samples_done * 8}
        recorded = progress.get("sha256") or {}
        for name in self._names():
            p = self._path(name, partial=True)
            have = os.path.getsize(p) if os.path.exists(p) else 0
            if have < sizes[name]:
                self.close()
                raise CacheFileError(f"{p} holds {have} bytes, fewer than the {sizes[name]} "
                                     "its progress record promises")
            f = open(p, "r+b" if os.path.exists(p) else "w+b")
            self._files[name] = f
            f.truncate(sizes[name])  # drop rows written after the last commit
            self._hashes[name] = _prefix_hash(f, sizes[name])
            if sizes[name] and self._hashes[name].hexdigest() != recorded.get(name):
                self.close()
                raise CacheFileError(f"{p}: the rows written before the interruption do not "
                                     "match their recorded SHA-256 (damaged)")
            f.seek(sizes[name])

    def _names(self):
        names = ["features"]
        if self.progress["dtype"] == "int8":
            names.append("scales")
        if self.progress["has_labels"]:
            names.append("labels")
        return names

    def _path(self, name: str, partial: bool) -> str:
        return os.path.join(self.dir, f"{name}.bin" + (".partial" if partial else ""))

    def _write(self, name: str, t: torch.Tensor) -> None:
        data = _bytes(t)
        self._files[name].write(data)
        self._hashes[name].update(data)

    def append(self, features: torch.Tensor, scales: torch.Tensor | None,
               labels: torch.Tensor | None) -> None:
        self._write("features", features)
        if scales is not None:
            self._write("scales", scales)
        if labels is not None and labels.numel():
            self._write("labels", labels.to(torch.int64))
            self.samples_done += labels.numel()
        self.rows_done += features.shape[0]

    def commit(self) -> None:
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
        atomic_write_json(os.path.join(self.dir, "progress.json"),
                          dict(self.progress, rows_done=self.rows_done,
                               samples_done=self.samples_done,
                               sha256={n: h.hexdigest() for n, h in self._hashes.items()}))

    def finish(self, meta: dict) -> dict:
        self.commit()
        files = {}
        for name, f in self._files.items():
            f.close()
            partial = self._path(name, partial=True)
            files[name] = {"bytes": os.path.getsize(partial),
                           "sha256": self._hashes[name].hexdigest()}
            os.replace(partial, self._path(name, partial=False))
        meta = dict(meta, format=FORMAT, files=files)
        atomic_write_json(os.path.join(self.dir, "meta.json"), meta)
        os.unlink(os.path.join(self.dir, "progress.json"))
        fsync_dir(self.dir)
        return meta

    def close(self) -> None:
        for f in self._files.values():
            f.close()


_DTYPES = {"int8": torch.int8, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float32": torch.float32, "int64": torch.int64}


def _check_meta(directory: str, meta: dict) -> None:
    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    files = meta.get("files")
    shape = meta.get("sample_shape")
    ok = (all(count(meta.get(k)) for k in ("rows", "row_elems", "samples"))
          and meta.get("dtype") in _DTYPES and isinstance(files, dict) and "features" in files
          and all(n in FILES and isinstance(i, dict) and count(i.get("bytes"))
                  and isinstance(i.get("sha256"), str) for n, i in files.items())
          and isinstance(shape, list) and all(count(d) for d in shape)
          and math.prod(shape) == meta["row_elems"])
    if not ok:
        raise CacheFileError(f"{os.path.join(directory, 'meta.json')} is malformed")


def load_verified(directory: str, meta: dict) -> dict[str, torch.Tensor]:
    """The cache's tensors, memory-mapped (copy-on-write) from files whose size and SHA-256
    match ``meta``; raises CacheFileError otherwise, so a damaged cache is never served."""
    _check_meta(directory, meta)
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
