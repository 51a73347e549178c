"""ptcore.FeatureCache: a frozen module's output for every sample of a dataset, computed
once, stored compactly, served to every later epoch."""
from __future__ import annotations

import math
import os
import time
import warnings

import torch
from tqdm.auto import tqdm

from ptcore.cache import persist
from ptcore.cache.build import encode, inference, module_device, run_module
from ptcore.cache.fingerprint import (VERIFY, dataset_parts, digest_parts, explain_change,
                                      module_digest)
from ptcore.cache.storage import TIERS, RowStore, choose_tier
from ptcore.cache.transforms import random_transforms
from ptcore.cache.views import CacheDataset, CacheLoader
from ptcore.runtime import distributed as D

__all__ = ["FeatureCache"]

DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
          torch.int8: "int8"}
_COMMIT_EVERY_S = 2.0  # how often an on-disk build makes its progress durable


def _resolve_shard(shard) -> tuple[int, int]:
    if shard is None or shard is False:
        return 0, 1
    if shard is True:
        return D.rank(), D.world_size()
    if (isinstance(shard, tuple) and len(shard) == 2 and all(isinstance(v, int) for v in shard)
            and 0 <= shard[0] < shard[1]):
        return shard
    raise ValueError(f"shard must be False, True or (rank, world_size) with 0 <= rank < "
                     f"world_size, got {shard!r}")


class FeatureCache:
    """Outputs of a frozen ``module`` for every sample of ``dataset``.

    ``cache[i]`` / ``cache.get(i, epoch=e)`` gives features ``[B, *sample_shape]`` (float32
    unless ``out_dtype``) on ``device``; ``loader()`` and ``as_dataset()`` give
    ``(features, labels)`` for training the rest of the model. See docs/cache.md.

    Args:
        module: the frozen prefix (or teacher). It runs in eval mode under no_grad wherever
            its parameters are; its parameters, buffers and train/eval flags are left as given.
        dataset: items ``x`` or ``(x, label, ...)`` with integer labels.
        dtype: storage dtype: float32, float16, bfloat16, or int8 (per-row scales, ~4× smaller
            than float32, error at most half a quantization step per element).
        storage: "device" (GPU memory), "cpu" (host memory, pinned when serving a GPU),
            "disk" (memory-mapped under ``path``) or "auto" (by size and free memory).
        path: a directory; the cache is persisted there, reused while its fingerprint
            matches, rebuilt (with a warning saying why) when it does not.
        device: where features are served (default: the module's device).
        views: store K augmented views per sample (epoch e serves view e % K); required when
            the dataset applies torchvision random transforms.
        shard: False (each process caches everything), True (each torch.distributed rank
            caches samples rank::world_size) or an explicit ``(rank, world_size)``.
        verify: how much of the data the fingerprint reads (deterministic data): "sample"
            (1% of the items, at least 3) or "full" (every item); labels and the data's
            origin (files, their sizes and times; in-memory tensors) always count.
    """

    def __init__(self, module: torch.nn.Module, dataset, *, dtype: torch.dtype = torch.float16,
                 storage: str = "auto", path: str | os.PathLike | None = None,
                 batch_size: int = 256, device=None, views: int | None = None,
                 progress: bool = True, shard=False, num_workers: int = 0,
                 verify: str = "sample"):
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if dtype not in DTYPES:
            raise TypeError(f"dtype must be one of {list(DTYPES)}, got {dtype}")
        if storage not in TIERS:
            raise ValueError(f"storage must be one of {TIERS}, got {storage!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if views is not None and (not isinstance(views, int) or views < 1):
            raise ValueError(f"views must be a positive int or None, got {views!r}")
        if verify not in VERIFY:
            raise ValueError(f"verify must be one of {VERIFY}, got {verify!r}")
        self.verify = verify
        self.module, self.dataset, self.dtype = module, dataset, dtype
        self.storage, self.batch_size, self.progress = storage, batch_size, progress
        self.num_workers = num_workers
        self.device = torch.device(device) if device is not None else module_device(module)
        self.views = views or 1
        self._views_given = views is not None
        self.rank, self.world_size = _resolve_shard(shard)
        self.path = None
        if path is not None:
            self.path = os.fspath(path)
            if self.world_size > 1:
                self.path = os.path.join(self.path, f"rank{self.rank}-of-{self.world_size}")
        self.sample_indices = range(self.rank, len(dataset), self.world_size)
        self._store: RowStore | None = None
        self._labels: torch.Tensor | None = None
        self._meta: dict | None = None

    # ------------------------------------------------------------------ building
    def build(self) -> "FeatureCache":
        """Load the cache from ``path`` if it is there and valid, else compute what is
        missing (resuming an interrupted build). Returns self."""
        randoms = random_transforms(self.dataset)
        if randoms and not self._views_given:
            raise ValueError(
                f"the dataset applies random transforms ({', '.join(randoms)}), so the frozen "
                "module's output differs every epoch and one cached copy would silently drop "
                "the augmentation; pass views=K to cache K augmented views per sample (epoch e "
                "serves view e % K), or remove the random transforms")
        if not randoms and self.views > 1:
            warnings.warn(f"views={self.views} but the dataset applies no (recognised) random "
                          "transform: the views will be identical", stacklevel=2)
        if len(self.sample_indices) == 0:
            raise ValueError("the dataset (or this rank's shard of it) is empty")
        parts = self._parts(probe=not randoms)
        if self.path is None:
            self._build_in_memory(parts)
        elif self.world_size == 1 and D.is_distributed():
            # Several processes caching the whole dataset under one path: rank 0 builds and
            # every rank learns its outcome (an error ends them all, none waits forever);
            # the others then load its verified files instead of racing to write them.
            D.on_main(lambda: self._build_or_load(parts), f"building the cache at {self.path}")
            if not D.is_main():
                self._build_or_load(parts)
        else:
            self._build_or_load(parts)
        return self

    def _build_or_load(self, parts: dict) -> None:
        persist.claim_directory(self.path)
        with persist.directory_lock(self.path):  # a concurrent builder waits, then loads
            if not self._load(parts):
                self._build_on_disk(parts)

    def _parts(self, probe: bool) -> dict:
        return dict(dataset_parts(self.dataset, probe=probe, verify=self.verify),
                    module=module_digest(self.module),
                    dtype=DTYPES[self.dtype], views=self.views,
                    shard=[self.rank, self.world_size], format=persist.FORMAT)

    def _rows(self, start: int):
        """(first row, sample shape, rows, scales, labels) batches from row ``start`` on.
        Row r holds view r // n of sample r % n; labels come with the first view only."""
        n = len(self.sample_indices)
        total = n * self.views
        items = [self.sample_indices[r % n] for r in range(start, total)]
        bar = tqdm(total=total, initial=start, unit="sample",
                   desc="FeatureCache", disable=not self.progress or not D.is_main())
        r = start
        with bar, inference(self.module):
            for out, y in run_module(self.module, self.dataset, items, self.batch_size,
                                     self.num_workers):
                rows, scales = encode(out, self.dtype)
                b = rows.shape[0]
                labels = None if y is None else y[:max(0, min(b, n - r))]
                yield r, tuple(out.shape[1:]), rows, scales, labels
                r += b
                bar.update(b)

    def _meta_for(self, parts, shape, rows: torch.Tensor, has_labels: bool) -> dict:
        return {"parts": parts, "sample_shape": list(shape), "dtype": DTYPES[self.dtype],
                "rows": len(self.sample_indices) * self.views, "row_elems": rows.shape[1],
                "samples": len(self.sample_indices), "has_labels": has_labels}

    def _build_in_memory(self, parts: dict) -> None:
        n = len(self.sample_indices)
        for r, shape, rows, sc, y in self._rows(0):
            if r == 0:
                meta = self._meta_for(parts, shape, rows, y is not None)
                nbytes = meta["rows"] * (rows.shape[1] * rows.element_size() + 4 * (sc is not None))
                tier = choose_tier(self.storage, nbytes, self.device, None)
                where = self.device if tier == "device" else torch.device("cpu")
                pin = tier == "cpu" and self.device.type == "cuda"
                store = torch.empty((meta["rows"], rows.shape[1]), dtype=rows.dtype,
                                    device=where, pin_memory=pin)
                scales = None if sc is None else torch.empty(meta["rows"], device=where,
                                                             pin_memory=pin)
                labels = None if y is None else torch.empty(n, dtype=torch.int64)
            store[r:r + rows.shape[0]].copy_(rows)
            if sc is not None:
                scales[r:r + sc.shape[0]].copy_(sc)
            if y is not None and y.numel():
                labels[r:r + y.numel()].copy_(y)
        self._install(meta, store, scales, labels, tier=tier)

    def _build_on_disk(self, parts: dict) -> None:
        progress = persist.read_json(os.path.join(self.path, "progress.json"))
        writer, start = None, 0
        if progress is not None and progress.get("parts") == parts:
            try:
                writer = persist.PartialWriter(self.path, progress, progress["rows_done"],
                                               progress["samples_done"])
                start = progress["rows_done"]
                warnings.warn(f"FeatureCache: resuming the interrupted build at {self.path} "
                              f"from row {start} of {progress['rows']}", stacklevel=3)
            except (persist.CacheFileError, KeyError, TypeError) as e:
                warnings.warn(f"FeatureCache: restarting the build at {self.path}: {e}",
                              stacklevel=3)
        try:
            last_commit = time.monotonic()
            for r, shape, rows, sc, y in self._rows(start):
                if writer is None:
                    meta = self._meta_for(parts, shape, rows, y is not None)
                    progress = dict(meta, row_bytes=rows.shape[1] * rows.element_size())
                    writer = persist.PartialWriter(self.path, progress, 0, 0)
                writer.append(rows, sc, y)
                if time.monotonic() - last_commit > _COMMIT_EVERY_S:
                    writer.commit()
                    last_commit = time.monotonic()
            meta = writer.finish({k: v for k, v in progress.items()
                                  if k not in ("row_bytes", "rows_done", "samples_done", "sha256")})
        finally:
            if writer is not None:
                writer.close()
        if not self._load(parts):
            raise RuntimeError(f"FeatureCache: the cache just written to {self.path} does "
                               "not read back; is another process writing there?")

    def _load(self, parts: dict) -> bool:
        """Serve the cache under ``path`` if its parts match and its files verify."""
        meta_path = os.path.join(self.path, "meta.json")
        meta = persist.read_json(meta_path)
        if meta is None:
            return False
        if meta.get("parts") != parts:
            old = meta.get("parts")
            why = explain_change(old if isinstance(old, dict) else {}, parts)
            warnings.warn(f"FeatureCache: rebuilding the cache at {self.path}: {why}",
                          stacklevel=3)
            os.unlink(meta_path)
            return False
        try:
            tensors = persist.load_verified(self.path, meta)
        except (persist.CacheFileError, OSError) as e:
            warnings.warn(f"FeatureCache: rebuilding the cache at {self.path}: {e}", stacklevel=3)
            os.unlink(meta_path)
            return False
        nbytes = sum(t.nbytes for t in tensors.values())
        tier = choose_tier(self.storage, nbytes, self.device, self.path)
        labels = tensors.get("labels")
        self._install(meta, tensors["features"], tensors.get("scales"),
                      None if labels is None else labels.clone(), tier=tier, mapped=True)
        return True

    def _install(self, meta, rows, scales, labels, *, tier: str, mapped: bool = False) -> None:
        self._store = RowStore(rows, scales, tier, self.device, mapped=mapped)
        self._labels = labels
        self._meta = meta

    # ------------------------------------------------------------------ serving
    def _built(self) -> dict:
        if self._meta is None:
            raise RuntimeError("the FeatureCache is not built yet: call .build() first")
        return self._meta

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self._built()["sample_shape"])

    @property
    def fingerprint(self) -> str:
        """Hash of everything the cache depends on (see ptcore.cache.fingerprint)."""
        meta = self._built()
        return digest_parts(dict(meta["parts"], sample_shape=meta["sample_shape"]))

    @property
    def labels(self) -> torch.Tensor | None:
        self._built()
        return self._labels

    @property
    def nbytes(self) -> int:
        """Bytes held: stored rows, their scales (int8) and the labels."""
        self._built()
        return self._store.nbytes + (0 if self._labels is None else self._labels.nbytes)

    @property
    def tier(self) -> str:
        """Where the rows live: "device", "cpu" or "disk" ("auto" resolved)."""
        self._built()
        return self._store.tier

    def __len__(self) -> int:
        return len(self.sample_indices)

    def __getitem__(self, index) -> torch.Tensor:
        return self.get(index)

    def _positions(self, index) -> tuple[torch.Tensor, bool]:
        n = len(self)
        if isinstance(index, slice):
            return torch.arange(n)[index], False
        if isinstance(index, int):
            pos = torch.tensor([index])
        else:
            pos = torch.as_tensor(index)
            if not isinstance(index, torch.Tensor) and pos.numel() == 0:
                pos = pos.long()  # [] is float32 to torch
            if pos.dtype.is_floating_point or pos.dtype == torch.bool or pos.dim() > 1:
                raise TypeError(f"indices must be an int, a slice, or a 1-D list/tensor of ints, "
                                f"got {pos.dtype} of shape {tuple(pos.shape)}")
            pos = pos.reshape(-1).to("cpu", torch.int64)
        if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= n):
            bad = pos[(pos < 0) | (pos >= n)][0].item()
            raise IndexError(f"index {bad} is out of range for a FeatureCache of {n} samples "
                             "(negative indices are not accepted)")
        return pos, isinstance(index, int)

    def get(self, index, *, epoch: int = 0, out_dtype: torch.dtype | None = None,
            device=None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Features of samples ``index`` (int, slice, list or LongTensor of positions in this
        cache) as served at ``epoch`` (view epoch % views): ``[B, *sample_shape]``, or
        ``sample_shape`` for an int index, in ``out_dtype`` (default: ``out``'s dtype, else
        float32) on ``device`` (default: ``out``'s device, else the cache's device).

        ``out``: a contiguous ``[B, *sample_shape]`` tensor to write the batch into and
        return, e.g. one buffer reused every step, so that a batch neither allocates nor
        page-faults fresh memory."""
        meta = self._built()
        pos, single = self._positions(index)
        rows = pos + (epoch % self.views) * len(self)
        dest = None
        if out is not None:
            shape = (pos.numel(), *self.sample_shape)
            if tuple(out.shape) != shape or not out.is_contiguous():
                raise ValueError(f"out must be a contiguous tensor of shape {list(shape)}, got "
                                 f"shape {list(out.shape)}"
                                 + ("" if out.is_contiguous() else " (not contiguous)"))
            out_dtype = out.dtype if out_dtype is None else out_dtype
            device = out.device if device is None else device
            dest = out.view(pos.numel(), meta["row_elems"])
        out_dtype = torch.float32 if out_dtype is None else out_dtype
        device = None if device is None else torch.device(device)
        feats = self._store.gather(rows, out_dtype, device, out=dest)
        feats = feats.view(-1, *self.sample_shape) if out is None else out
        return feats[0] if single else feats

    def loader(self, batch_size: int, *, shuffle: bool = True,
               generator: torch.Generator | None = None, drop_last: bool = False,
               epoch: int = 0) -> CacheLoader:
        """Batches ``(features [B, *sample_shape] float32, labels [B] or None)`` of ``epoch``
        on the cache's device. With ``shard``, every rank yields the same number of batches
        (short shards wrap around, like DistributedSampler's padding)."""
        self._built()
        padded = math.ceil(len(self.dataset) / self.world_size)
        return CacheLoader(self, batch_size, shuffle=shuffle, generator=generator,
                           drop_last=drop_last, epoch=epoch, length=max(padded, len(self)))

    def as_dataset(self, epoch: int = 0) -> CacheDataset:
        """A map-style Dataset of ``(feature, label)`` (CPU tensors; ``feature`` alone when
        the data has no labels) as served at ``epoch``; works with any sampler, including
        DistributedSampler (give each rank the whole cache: shard=False)."""
        self._built()
        return CacheDataset(self, epoch)

    def __repr__(self) -> str:
        state = (f"{self.tier}, {self.nbytes / 2**20:.1f} MiB, shape {self.sample_shape}"
                 if self._meta is not None else "not built")
        return (f"FeatureCache({len(self)} samples, dtype={DTYPES[self.dtype]}, "
                f"views={self.views}, {state})")
