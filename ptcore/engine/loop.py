"""The training loop. A strategy supplies ``step_fn(model, batch) -> loss`` (or a dict with
"loss" and extra scalar metrics); the loop does the rest: sampling, AMP, gradient
accumulation, LR schedule, evaluation, metrics, progress, checkpoints, resume and DDP.

Batches are drawn by a DistributedSampler seeded by (seed, epoch) in one process too, so
the sample order depends only on the epoch: a resumed run sees the same batches, and
a run on N processes sees exactly the batches of one process with N times the batch size.
Each batch is loaded under its own seed (:mod:`ptcore.engine.sampling`), so a run resumed
from a checkpoint taken in the middle of an epoch (``save_every``) skips the batches it
trained without loading them and goes on bit for bit as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ptcore.engine.ema import check_ema, make_ema
from ptcore.engine.loaders import check_num_workers, make_loader
from ptcore.engine.loggers import Loggers, check_loggers
from ptcore.engine.metrics import MetricsLog
from ptcore.engine.options import deterministic_option
from ptcore.engine.policy import CheckpointPolicy
from ptcore.engine.precise_bn import recompute_bn_stats
from ptcore.engine.resume import (RESUME_MODES, RunState, fit_settings, open_checkpoint,
                                  rank_sums)
from ptcore.engine.sampling import EpochBatches, SeededBatches
from ptcore.engine.schedules import make_schedule
from ptcore.runtime import distributed as D
from ptcore.runtime.rng import set_rng_state
from ptcore.runtime.run_folder import RunFolder

__all__ = ["fit", "evaluate", "classification_step", "resolve_amp", "check_grad_clip"]


def classification_step(model: nn.Module, batch) -> dict:
    """Cross-entropy on ``(inputs, labels)``; labels equal to -100 are ignored."""
    x, y = batch
    logits = model(x)
    return {"loss": F.cross_entropy(logits.float(), y),
            "accuracy": (logits.argmax(-1) == y).float().mean()}


def resolve_amp(amp, device: torch.device) -> torch.dtype | None:
    """``amp``: None/False/"off", "bf16", "fp16" (GPU only, with a GradScaler) or "auto"
    (bf16 on a GPU that has it, off on CPU where bf16 matmuls are often slower)."""
    if amp in (None, False, "off"):
        return None
    if amp == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device; use amp='bf16' on CPU")
        return torch.float16
    raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {amp!r}")


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def _autocast(device: torch.device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _default_predict(model, batch):
    return model(batch[0]), batch[1]


@torch.no_grad()
def evaluate(model: nn.Module, data, *, batch_size: int = 256,
             predict_fn: Callable | None = None, device=None, amp=None,
             num_workers=0) -> dict:
    """Mean cross-entropy and accuracy over ``data`` (labels -100 skipped).
    ``predict_fn(model, batch) -> (logits, labels)``; under DDP each process takes every
    world-th sample and the sums are reduced, so the result is exact."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    predict_fn = predict_fn or _default_predict
    was_training = model.training
    model.eval()
    shard = torch.utils.data.Subset(data, range(D.rank(), len(data), D.world_size()))
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, count
    for batch in make_loader(shard, batch_size, num_workers=num_workers, device=device):
        with _autocast(device, resolve_amp(amp, device)):
            logits, y = predict_fn(model, _to(batch, device))
        keep = y != -100
        logits, y = logits[keep].float(), y[keep]
        sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                             (logits.argmax(-1) == y).sum().double(),
                             torch.tensor(float(len(y)), device=device, dtype=torch.float64)])
    model.train(was_training)
    loss, correct, count = D.all_sum(sums).tolist()
    n = max(count, 1.0)
    return {"loss": loss / n, "accuracy": correct / n, "count": int(count)}


def _batch_len(batch) -> int:
    """Samples in a batch: the length of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return len(batch)
    items = batch.values() if isinstance(batch, dict) else batch
    nested = (b for b in items if isinstance(b, (torch.Tensor, list, tuple, dict)))
    return next((_batch_len(b) for b in nested), 0)


def _trainable(model: nn.Module) -> tuple[int, ...]:
    return tuple(i for i, p in enumerate(model.parameters()) if p.requires_grad)


def _batches(data, batch_size, seed, drop_last) -> EpochBatches:
    return EpochBatches(data, batch_size, seed=seed, drop_last=drop_last, rank=D.rank(),
                        world=D.world_size())


def _loader(data, batch_size, seed, drop_last, num_workers, device=None) -> DataLoader:
    """This rank's training batches of ``data``; ``loader.batch_sampler.set_epoch(epoch,
    start)`` before each pass."""
    return make_loader(SeededBatches(data), batch_sampler=_batches(data, batch_size, seed,
                                                                   drop_last),
                       num_workers=num_workers, device=device)


def _peak_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate logged: the largest among the parameter groups. Under layer-wise
    decay group 0 is the layer furthest from the head (``lr * decay ** (B - 1)``, frozen in
    a linear probe), while the head's is the ``lr`` the user set, times the schedule."""
    return max(g["lr"] for g in optimizer.param_groups)


def check_grad_clip(grad_clip) -> None:
    # A negative max-norm would flip every gradient; 0, inf and NaN clip to nonsense.
    if grad_clip is None:
        return
    if isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float)) \
            or not 0 < grad_clip < math.inf:
        raise ValueError(f"grad_clip must be None or a finite number > 0 (the largest "
                         f"gradient norm), got {grad_clip!r}")


def check_precise_bn(precise_bn) -> None:
    if isinstance(precise_bn, bool) or not isinstance(precise_bn, int) or precise_bn < 0:
        raise ValueError(f"precise_bn must be an int >= 0 (batches), got {precise_bn!r}")


def _precise_bn(model, data, batches: int, predict_fn, device, amp_dtype, *, batch_size,
                seed, epoch) -> None:
    # The epoch's own sample order (the sampler is seeded by (seed, epoch)), first batches.
    loader = _loader(data, batch_size, seed, False, 0)
    loader.batch_sampler.set_epoch(epoch)
    predict_fn = predict_fn or _default_predict

    def forward(batch):
        with _autocast(device, amp_dtype):
            predict_fn(model, _to(batch, device))

    recompute_bn_stats(model, itertools.islice(loader, batches), forward)


def _unpack(out) -> tuple[torch.Tensor, dict]:
    if isinstance(out, torch.Tensor):
        return out, {}
    if isinstance(out, dict) and "loss" in out:
        return out["loss"], {k: v for k, v in out.items() if k != "loss"}
    raise TypeError("step_fn must return a loss tensor or a dict with a 'loss' entry, got "
                    f"{type(out).__name__}")


@deterministic_option
def fit(model: nn.Module, train_data, optimizer: torch.optim.Optimizer, *, epochs: int,
        batch_size: int, step_fn: Callable = classification_step,
        schedule: str = "constant", warmup: float = 0.0, val_data=None,
        predict_fn: Callable | None = None, out_dir=None, resume: bool | str = False,
        accumulate: int = 1, amp="auto", grad_clip: float | None = None,
        on_epoch_start: Iterable[Callable[[int, nn.Module], None]] = (), seed: int = 0,
        device=None, progress: bool = True, num_workers=0, drop_last: bool = False,
        precise_bn: int = 0, meta: dict | None = None, log=("jsonl",), log_every: int = 50,
        save_every: int = 0, keep_last: int = 0, keep_best: int = 0,
        best_metric: str = "val_loss", best_mode: str = "min", patience: int | None = None,
        ema: float | None = None,
        before_step: Callable[[nn.Module], None] | None = None) -> list[dict]:
    """Train ``model`` for ``epochs`` epochs; returns the per-epoch metric records.

    ``train_data`` and ``val_data``: a Dataset, or ``epoch -> Dataset`` (e.g. a feature cache
    for the current split). ``batch_size`` is per process; the optimizer sees ``batch_size × world ×
    accumulate`` samples per step. ``on_epoch_start`` callbacks run before each epoch (and
    again on resume), e.g. to unfreeze; frozen parameters are excluded from DDP, which is
    rebuilt when the set of trainable parameters changes. With ``out_dir`` a checkpoint
    (``last.pt``) and ``metrics.jsonl`` are written every epoch; a folder that already holds
    a checkpoint is refused unless ``resume``. ``resume=True`` continues from the checkpoint
    there exactly (model, optimizer, scheduler, scaler, RNG, epoch and batch) and refuses
    one made with other settings (naming them) or a missing one; ``resume="auto"`` starts
    when there is none.
    ``num_workers`` (an int or "auto", :mod:`ptcore.engine.loaders`) load the training and
    validation batches; the training workers persist while an epoch's data is the same
    dataset object as the last epoch's.
    ``meta`` is stored in checkpoints (e.g. the model name, for reloading).
    ``precise_bn``: after each epoch, recompute the running statistics of the BatchNorm
    layers in training mode over this many training batches (see
    :func:`ptcore.engine.precise_bn.recompute_bn_stats`); 0 keeps the moving averages.
    ``log``: loggers besides metrics.jsonl ("csv", "tensorboard"; a list or comma-separated),
    with a step record every ``log_every`` optimizer steps (:mod:`ptcore.engine.loggers`).
    ``save_every``: also write ``last.pt`` every that many optimizer steps within an epoch
    (0: at epoch ends only); resuming from such a checkpoint continues mid-epoch exactly
    (sample position, RNG, partial epoch metrics). ``keep_last``, ``keep_best`` (by
    ``best_metric`` in ``best_mode``) and ``patience`` (stop after that many epochs without
    improvement): :mod:`ptcore.engine.policy`. These may change on resume; they do not
    change what is trained. ``ema``: keep an exponential moving average of the weights with
    this decay per optimizer step (e.g. 0.999; :mod:`ptcore.engine.ema`), validated each
    epoch beside the model (``val_ema_*``) and stored in checkpoints (``ema``).
    ``deterministic=True``: torch's deterministic algorithms only, for the whole run
    (:func:`ptcore.runtime.rng.deterministic_algorithms`; docs/reproducibility.md).
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("accumulate", accumulate)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    check_precise_bn(precise_bn)
    check_grad_clip(grad_clip)
    check_num_workers(num_workers)
    check_ema(ema)
    log = check_loggers(log, log_every)
    policy = CheckpointPolicy(keep_last, keep_best, best_metric, best_mode, patience,
                              save_every)
    policy.check(has_val=val_data is not None, has_out=out_dir is not None)
    if set(log) - {"jsonl"} and out_dir is None:
        raise ValueError(f"log={list(log)} needs an output folder (out_dir)")
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be False, True or 'auto', got {resume!r}")
    distributed = D.setup()
    device = D.resolve_device(device)
    amp_dtype = resolve_amp(amp, device)
    model.to(device)
    folder = RunFolder.of(out_dir) if out_dir is not None else None
    if resume and folder is None:
        raise ValueError("resume=True needs out_dir (where the checkpoint is)")

    def epoch_data(epoch):
        return train_data(epoch) if callable(train_data) else train_data

    settings = fit_settings(model, optimizer, batch_size=batch_size, accumulate=accumulate,
                            schedule=schedule, warmup=warmup, seed=seed, drop_last=drop_last,
                            grad_clip=grad_clip, precise_bn=precise_bn, meta=meta, ema=ema)
    ckpt = open_checkpoint(folder, resume, settings) if folder is not None else None
    start = ckpt["epoch"] if ckpt is not None else 0
    # Batches of epoch `start` trained already: a checkpoint written mid-epoch.
    skip = ckpt.get("batch", 0) if ckpt is not None else 0
    per_epoch = _batches(epoch_data(min(start, epochs - 1)), batch_size, seed,
                         drop_last).per_epoch
    total_steps = epochs * math.ceil(per_epoch / accumulate)
    state = RunState(model, optimizer, make_schedule(schedule, optimizer, total_steps, warmup),
                     torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
                     make_ema(model, ema) if ema is not None else None, total_steps, settings,
                     meta)
    scheduler, averaged = state.scheduler, state.averaged
    history = state.restore(ckpt) if ckpt is not None else []
    loggers = None
    if folder is not None:
        metrics_log = MetricsLog(folder.metrics)
        D.on_main(lambda: metrics_log.rewrite(history), f"writing {metrics_log.path}")
        if D.is_main():
            loggers = Loggers(log, folder.path, step=scheduler.last_epoch, history=history,
                              world=D.world_size())

    try:
        wrapped, wrapped_for, loader = model, None, None
        for epoch in range(start, epochs):
            if policy.should_stop(history):  # also when resuming a run that stopped early
                break
            t0 = time.perf_counter()
            for cb in on_epoch_start:
                cb(epoch, model)
            if distributed and wrapped_for != _trainable(model):
                if not _trainable(model):
                    raise ValueError("no trainable parameters: everything is frozen")
                wrapped_for = _trainable(model)
                wrapped = DistributedDataParallel(
                    model, device_ids=[device.index] if device.type == "cuda" else None)
            data = epoch_data(epoch)
            if loader is None or loader.dataset.data is not data:  # same data: keep workers
                loader = _loader(data, batch_size, seed, drop_last, num_workers, device)
            first = skip if epoch == start else 0
            loader.batch_sampler.set_epoch(epoch, first)
            n_batches = loader.batch_sampler.per_epoch
            model.train()
            sums: dict[str, torch.Tensor] = {}  # summed on device: no host sync per step
            if first:
                # Mid-epoch resume: the generators as they were after batch `first - 1`,
                # set after the epoch-start callbacks and data, which ran before batch 0.
                set_rng_state(ckpt["rng"])
                part = ckpt["sums"]
                sums = {k: v.to(device) for k, v in zip(part["names"],
                                                         part["values"][D.rank()])}
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                       initial=first, total=n_batches,
                       disable=not (progress and D.is_main()))
            for i, batch in enumerate(bar, start=first):
                sync = (i + 1) % accumulate == 0 or i + 1 == n_batches
                with (wrapped.no_sync() if distributed and not sync
                      else contextlib.nullcontext()):
                    with _autocast(device, amp_dtype):
                        loss, extras = _unpack(step_fn(wrapped, _to(batch, device)))
                    scaled = loss / accumulate
                    (state.scaler.scale(scaled) if state.scaler is not None
                     else scaled).backward()
                if sync:
                    _update(state, grad_clip, before_step)
                if loggers is not None:
                    loggers.count(_batch_len(batch))
                    if sync and scheduler.last_epoch % log_every == 0:
                        loggers.step(scheduler.last_epoch, epoch, float(loss.detach()),
                                     _peak_lr(optimizer))
                for k, v in {"loss": loss, **extras}.items():
                    sums[k] = sums.get(k, 0.0) + torch.as_tensor(v, device=device).detach().double()
                if i % 10 == 0:
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
                # Only at an optimizer step (no gradients half accumulated) and not the
                # epoch's last one, which the epoch's own checkpoint follows.
                if sync and save_every and folder is not None and i + 1 < n_batches \
                        and scheduler.last_epoch % save_every == 0:
                    partial = rank_sums(sums)
                    D.on_main(lambda: state.save(folder.checkpoint, epoch=epoch,
                                                 history=history, batch=i + 1, sums=partial),
                              f"saving the checkpoint of step {scheduler.last_epoch}")
            record = {"epoch": epoch, **_train_means(sums, n_batches, device),
                      "lr": _peak_lr(optimizer)}
            if precise_bn:
                _precise_bn(model, data, precise_bn, predict_fn, device, amp_dtype,
                            batch_size=batch_size, seed=seed, epoch=epoch)
            if val_data is not None:
                record.update(_validate(model, averaged, val_data(epoch) if callable(val_data)
                                        else val_data, batch_size=max(batch_size, 256),
                                        predict_fn=predict_fn, device=device, amp=amp,
                                        num_workers=num_workers))
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            if folder is not None:
                def end_of_epoch():
                    metrics_log.append(record)  # first: a kill before the checkpoint drops it
                    state.save(folder.checkpoint, epoch=epoch + 1, history=history)
                    policy.apply(folder, history)
                D.on_main(end_of_epoch, f"saving the checkpoint of epoch {epoch + 1}")
            else:
                D.barrier()
            if loggers is not None:
                loggers.epoch(scheduler.last_epoch, history)
    finally:
        if loggers is not None:
            loggers.close()
    return history


def _update(state: RunState, grad_clip, before_step) -> None:
    """One optimizer step on the accumulated gradients, then the schedule and the EMA."""
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    if scaler is not None:
        scaler.unscale_(optimizer)
    if before_step is not None:
        before_step(model)
    if grad_clip is not None:
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    if state.averaged is not None:
        state.averaged.update_parameters(model)


def _train_means(sums: dict[str, torch.Tensor], n_batches: int, device) -> dict:
    """The epoch's ``train_`` metrics: each step metric's mean over every rank's batches."""
    totals = D.all_sum(torch.stack([*sums.values(), torch.tensor(
        float(n_batches), dtype=torch.float64, device=device)]))
    return {f"train_{k}": v / float(totals[-1]) for k, v in zip(sums, totals.tolist())}


def _validate(model, averaged, data, **kw) -> dict:
    """The epoch's ``val_`` metrics (``val_ema_`` of the averaged weights too)."""
    record = {f"val_{k}": v for k, v in evaluate(model, data, **kw).items()}
    if averaged is not None:
        record.update({f"val_ema_{k}": v for k, v in evaluate(averaged.module, data,
                                                               **kw).items()})
    return record
