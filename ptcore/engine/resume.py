"""Checkpoint and resume for :func:`ptcore.engine.fit`: what a resumed run must match, which
checkpoint it continues from (the run folder decides whether the folder may be used,
:mod:`ptcore.runtime.run_folder`), and what a checkpoint holds, written and restored in one
place so the two cannot drift apart."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ptcore.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ptcore.engine.schedules import resume_schedule
from ptcore.runtime import distributed as D
from ptcore.runtime.rng import get_rng_state, set_rng_state
from ptcore.runtime.run_folder import CHECKPOINT, RunFolder
from ptcore.runtime.settings import model_signature, optimizer_settings, plain

__all__ = ["RESUME_MODES", "fit_settings", "open_checkpoint", "RunState", "rank_sums"]

RESUME_MODES = (False, True, "auto")


def fit_settings(model: nn.Module, optimizer: torch.optim.Optimizer, *, batch_size: int,
                 accumulate: int, schedule: str, warmup: float, seed: int, drop_last: bool,
                 grad_clip, precise_bn: int, meta: dict | None, ema) -> dict:
    """What a resume must match; epochs may grow (train an interrupted or finished run
    longer)."""
    return plain({"batch_size": batch_size, "accumulate": accumulate,
                  "world_size": D.world_size(), "schedule": schedule, "warmup": warmup,
                  "seed": seed, "drop_last": drop_last, "grad_clip": grad_clip,
                  "precise_bn": precise_bn, "optimizer": optimizer_settings(optimizer),
                  "model": model_signature(model.state_dict()), "meta": meta or {},
                  **({"ema": ema} if ema is not None else {})})


def open_checkpoint(folder: RunFolder, resume, settings: dict) -> dict | None:
    """The checkpoint to resume from (None: start), after checking that ``folder`` holds no
    other run (a new run) or this run's checkpoint (a resumed one). Rank 0 reads the file
    and broadcasts it, so ranks with node-local disks agree."""
    folder.remove_stale_temps()
    if not resume:
        folder.refuse_another_run(CHECKPOINT)
        return None
    ckpt = load_checkpoint(folder.checkpoint, from_main=True)
    if ckpt is None:
        if resume == "auto":
            return None
        raise folder.nothing_to_resume(CHECKPOINT)
    what = repr(str(folder.checkpoint))
    if "settings" in ckpt:
        folder.check_settings(ckpt["settings"], settings, what, error=CheckpointError)
    elif model_signature(ckpt["model"]) != settings["model"]:
        raise CheckpointError(f"{what} holds another model (state_dict names or shapes "
                              "differ): resume with the same model, or start over")
    return ckpt


@dataclass
class RunState:
    """Everything a checkpoint restores besides the position and the history."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None
    averaged: nn.Module | None  # the EMA model
    schedule_steps: int
    settings: dict
    meta: dict | None

    def save(self, path, *, epoch: int, history: list, batch: int = 0, sums=None) -> None:
        """A checkpoint after ``batch`` batches of ``epoch`` (0: its start), with the partial
        epoch sums ``sums`` of a mid-epoch one."""
        save_checkpoint(path, self.model.state_dict(), epoch=epoch, batch=batch,
                        optimizer=self.optimizer.state_dict(),
                        scheduler=self.scheduler.state_dict(),
                        schedule_steps=self.schedule_steps,
                        scaler=self.scaler.state_dict() if self.scaler is not None else None,
                        rng=get_rng_state(), history=history, meta=self.meta or {},
                        settings=self.settings,
                        **({} if self.averaged is None else {"ema": self.averaged.state_dict()}),
                        **({} if sums is None else {"sums": sums}))

    def restore(self, ckpt: dict) -> list[dict]:
        """Load ``ckpt``; returns its history. The generators of a mid-epoch checkpoint are
        set later, by the loop, after the epoch-start callbacks that ran before its batch 0."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        resume_schedule(self.scheduler, self.optimizer, ckpt["scheduler"],
                        same_length=ckpt.get("schedule_steps") == self.schedule_steps)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.averaged is not None:
            self.averaged.load_state_dict(ckpt["ema"])
        if not ckpt.get("batch", 0):
            set_rng_state(ckpt["rng"])
        return list(ckpt.get("history", []))


def rank_sums(sums: dict[str, torch.Tensor]) -> dict:
    """Every rank's partial epoch sums, gathered (a zero-padded sum is exact) for a
    mid-epoch checkpoint; each rank resumes from its own row."""
    rows = torch.zeros(D.world_size(), len(sums), dtype=torch.float64,
                       device=next(iter(sums.values())).device)
    rows[D.rank()] = torch.stack(list(sums.values()))
    return {"names": list(sums), "values": D.all_sum(rows).cpu()}
