"""FineTune: adapt a pretrained classifier by linear probing, partial or full fine-tuning.

Composes ptcore.models (split points, freezing), ptcore.cache (features of the frozen
prefix, computed once instead of every epoch) and ptcore.engine (the loop).
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from ptcore import engine
from ptcore.data import is_deterministic
from ptcore.runtime import distributed as D
from ptcore.data.augment import BatchMix, soft_classification
from ptcore.models import (BN_MODES, StagedModel, blocks, freeze, get_head, head_width,
                           split_index, stages, unfreeze)
from ptcore.strategies._param_groups import layer_decay_groups

__all__ = ["FineTune", "MODES"]

MODES = ("linear", "partial", "full")


class FineTune:
    """Fine-tune ``model`` (a registered torchvision model with its head already sized).

    mode: "linear" (all frozen but the head), "partial" (frozen through split point
    ``freeze``, e.g. "layer3"), "full" (nothing frozen).
    lr: the head's learning rate; each layer group further from the head gets
    ``layer_decay`` times the one after it. AdamW (or ``optimizer="sgd"`` with ``momentum``,
    ``nesterov``) with ``weight_decay`` (none on biases, norms, tokens); ``label_smoothing`` in
    the training loss; ``mixup``/``cutmix``: alphas of MixUp/CutMix on each training batch
    (:mod:`ptcore.data.augment`; None or 0: off). unfreeze_every: every N epochs one more
    layer group is unfrozen (ULMFiT).
    bn: BatchNorm of the trainable part, "train", "eval" (running stats fixed) or "frozen"
    (stats and affine fixed); frozen layers always keep their statistics.
    cache: use ptcore.FeatureCache for the frozen prefix when it is non-empty and the
    training data's transform is deterministic and no batch is mixed (MixUp/CutMix mix
    images, not features); the cache follows the split as it moves.
    The rest go to :func:`ptcore.engine.fit` (``precise_bn``: re-estimate the
    BatchNorm statistics after each epoch, for short runs and low-momentum BatchNorm).
    """

    def __init__(self, model: nn.Module, *, mode: str = "partial", freeze: str | None = None,
                 lr: float = 1e-3, layer_decay: float = 0.5, weight_decay: float = 0.01,
                 unfreeze_every: int | None = None, bn: str = "train", cache: bool = True,
                 cache_dtype: torch.dtype = torch.float16, epochs: int = 10,
                 batch_size: int = 32, schedule: str = "cosine", warmup: float = 0.1,
                 accumulate: int = 1, amp="auto", grad_clip: float | None = None,
                 seed: int = 0, device=None, progress: bool = True, num_workers: int | str = 0,
                 precise_bn: int = 0, label_smoothing: float = 0.0, optimizer: str = "adamw",
                 momentum: float = 0.9, nesterov: bool = False, mixup: float | None = None,
                 cutmix: float | None = None, **run_options):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "partial" and freeze is None:
            raise ValueError("mode='partial' needs freeze, the split point frozen through "
                             "(e.g. freeze='layer3', --freeze layer3)")
        if mode != "partial" and freeze is not None:
            raise ValueError(f"freeze is for mode='partial' only, not mode={mode!r} (linear "
                             "freezes all but the head, full nothing)")
        if bn not in BN_MODES:
            raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
        if unfreeze_every is not None and (not isinstance(unfreeze_every, int)
                                           or unfreeze_every < 1):
            raise ValueError(f"unfreeze_every must be a positive int, got {unfreeze_every!r}")
        self.model = StagedModel(model)
        self._blocks = blocks(self.model)
        # stages frozen at the start: through the split point, all but the head, or none
        self._k0 = (split_index(self.model, freeze) if mode == "partial"
                    else self._blocks[-1][0] if mode == "linear" else 0)
        self.mode, self.bn, self.cache, self.cache_dtype = mode, bn, cache, cache_dtype
        self.unfreeze_every = unfreeze_every
        self.label_smoothing = engine.check_label_smoothing(label_smoothing)
        self.mix = BatchMix(mixup, cutmix)
        self.device = D.resolve_device(device)
        self.optimizer = engine.make_optimizer(
            layer_decay_groups(self.model, lr, layer_decay, weight_decay), optimizer,
            momentum=momentum, nesterov=nesterov)
        self.fit_args = dict(epochs=epochs, batch_size=batch_size, schedule=schedule,
                             warmup=warmup, accumulate=accumulate, amp=amp,
                             grad_clip=grad_clip, seed=seed, progress=progress,
                             num_workers=num_workers, precise_bn=precise_bn,
                             **engine.run_options(run_options))
        self._caches: dict[tuple[int, str], object] = {}
        self._input_start = 0
        self._set_split(self._k0)

    # -- the split and how it moves ------------------------------------------------------
    def split_at(self, epoch: int) -> int:
        """Number of frozen stages during ``epoch``."""
        k = self._k0
        if self.unfreeze_every:
            for _ in range(epoch // self.unfreeze_every):
                # back to the start of the group that ends at the current split
                k = max((s for s, _ in self._blocks if s < k), default=0)
        return k

    def _set_split(self, k: int) -> None:
        st = stages(self.model)
        unfreeze(nn.ModuleList(s.module for s in st[k:]), bn=self.bn)
        freeze(nn.ModuleList(s.module for s in st[:k]))
        self.split = k

    # -- the feature cache ---------------------------------------------------------------
    def _cached_input(self, k: int, data, which: str):
        """(dataset to feed, first stage to run) for split ``k``: cached prefix features
        when that is allowed and useful, else the images themselves."""
        mixed = self.mix and which == "train"
        if not (self.cache and k > 0 and is_deterministic(data)) or mixed:
            return data, 0
        key = (k, which)
        if key not in self._caches:
            from ptcore.cache import FeatureCache

            self._caches = {c: v for c, v in self._caches.items() if c[0] == k}  # split moved
            prefix = nn.Sequential(*[s.module for s in stages(self.model)[:k]])
            self._caches[key] = FeatureCache(prefix, data, dtype=self.cache_dtype,
                                             device=self.device,
                                             progress=self.fit_args["progress"],
                                             num_workers=self.fit_args["num_workers"]).build()
        return self._caches[key], k

    # -- training ------------------------------------------------------------------------
    def fit(self, train, val=None, *, out_dir=None, resume: bool = False,
            meta: dict | None = None) -> dict:
        """Train on ``train`` (validating on ``val`` each epoch); with ``out_dir`` write
        ``last.pt`` (every epoch), ``metrics.jsonl``, ``model.pt`` and ``summary.json``.
        Returns the summary (config, per-epoch history, final validation metrics)."""
        start_time = time.perf_counter()
        cached_epochs = set()

        def on_epoch_start(epoch, model):
            if self.split_at(epoch) != self.split:
                self._set_split(self.split_at(epoch))

        # The engine builds each epoch's data right before consuming it, so the stage the
        # step starts from can be set here: the split when the data is cached features.
        def train_data(epoch):
            data, self._input_start = self._cached_input(self.split_at(epoch), train, "train")
            if self._input_start:
                cached_epochs.add(epoch)
                return data.as_dataset(epoch)
            return data

        def val_data(epoch):
            data, self._input_start = self._cached_input(self.split_at(epoch), val, "val")
            return data.as_dataset() if self._input_start else data

        classes = head_width(get_head(self.model)) if self.mix else None

        def step(model, batch):
            x, y = batch
            if self.mix:
                x, y = self.mix(x, y, classes)
            return soft_classification(model(x, start=self._input_start), y,
                                       label_smoothing=self.label_smoothing)

        def predict(model, batch):
            return model(batch[0], start=self._input_start), batch[1]

        history = engine.fit(self.model, train_data, self.optimizer, step_fn=step,
                             val_data=val_data if val is not None else None,
                             predict_fn=predict, on_epoch_start=[on_epoch_start],
                             out_dir=out_dir, resume=resume, device=self.device,
                             meta=meta, **self.fit_args)
        summary = {"mode": self.mode, "final_split": self.split,
                   "frozen_through": stages(self.model)[self.split - 1].name
                   if self.split else None,
                   "cached_epochs": sorted(cached_epochs),
                   "seconds": time.perf_counter() - start_time, "history": history,
                   "final": history[-1] if history else {}}
        if out_dir is not None:
            engine.RunFolder.of(out_dir).finish(self.model.state_dict(), summary)
        return summary

    def evaluate(self, data, *, batch_size: int = 256) -> dict:
        """Loss and accuracy of the whole model (images in, no cache) on ``data``."""
        return engine.evaluate(self.model, data, batch_size=batch_size, device=self.device,
                               amp=self.fit_args["amp"])
