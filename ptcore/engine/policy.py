"""Checkpoint policy: which epoch checkpoints to keep besides ``last.pt``, when to stop
early, and how often ``last.pt`` is also written within an epoch (see docs/logging.md).

Everything is derived from the run's history (the per-epoch records the checkpoint holds),
so a resumed run ranks, keeps and stops exactly as an uninterrupted one, with no state of
its own. Kept files are byte copies of ``last.pt`` made right after it is written (atomic,
verified when read like any checkpoint): ``epoch-0003.pt`` for the last ``keep_last``
epochs, ``best-epoch-0003.pt`` for the ``keep_best`` best by ``best_metric``, and
``best.json`` ranking the best ones. Epochs count from 1 in file names, as in checkpoints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ptcore.runtime.files import atomic_write_bytes, atomic_write_json
from ptcore.runtime.run_folder import RunFolder

__all__ = ["CheckpointPolicy", "MODES"]

MODES = ("min", "max")


def _count(name, v, allow_none=False) -> None:
    if allow_none and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < (1 if allow_none else 0):
        raise ValueError(f"{name} must be {'null or an int >= 1' if allow_none else 'an int >= 0'}"
                         f", got {v!r}")


@dataclass(frozen=True)
class CheckpointPolicy:
    keep_last: int = 0
    keep_best: int = 0
    best_metric: str = "val_loss"
    best_mode: str = "min"
    patience: int | None = None
    save_every: int = 0  # optimizer steps between mid-epoch checkpoints (0: none)

    def check(self, *, has_val: bool, has_out: bool) -> None:
        """Before any training: counts, mode, a metric the loop can produce."""
        _count("keep_last", self.keep_last)
        _count("keep_best", self.keep_best)
        _count("patience", self.patience, allow_none=True)
        _count("save_every", self.save_every)
        if self.best_mode not in MODES:
            raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")
        if not isinstance(self.best_metric, str) or not self.best_metric.startswith(
                ("train_", "val_")):
            raise ValueError(f"best_metric must name an epoch metric (train_loss, val_loss, "
                             f"val_accuracy, ...), got {self.best_metric!r}")
        if (self.keep_best or self.keep_last or self.save_every) and not has_out:
            raise ValueError("keep_best, keep_last and save_every need an output folder "
                             "(out_dir)")
        if self.ranks and self.best_metric.startswith("val_") and not has_val:
            raise ValueError(f"best_metric={self.best_metric!r} needs validation data; give "
                             "some, or rank by a train_ metric")

    @property
    def ranks(self) -> bool:
        return bool(self.keep_best or self.patience)

    def _value(self, record: dict) -> float:
        if self.best_metric not in record:
            raise ValueError(f"best_metric {self.best_metric!r} is not among the epoch "
                             f"metrics ({', '.join(sorted(record))})")
        v = float(record[self.best_metric])
        # NaN never ranks best; max is ranked as min of the negation.
        return math.inf if math.isnan(v) else v if self.best_mode == "min" else -v

    def ranking(self, history: list[dict]) -> list[int]:
        """Indices into ``history``, best first; ties keep the earlier epoch first."""
        return sorted(range(len(history)), key=lambda i: (self._value(history[i]), i))

    def should_stop(self, history: list[dict]) -> bool:
        """``patience`` epochs have passed without a strict improvement on the best."""
        if not self.patience or not history:
            return False
        return len(history) - 1 - self.ranking(history)[0] >= self.patience

    def apply(self, folder: RunFolder, history: list[dict]) -> None:
        """Copy ``last.pt`` (the checkpoint of ``history[-1]``) where the policy keeps it and
        delete the copies it no longer keeps. Call after ``last.pt`` is written."""
        n = len(history)
        keep = {folder.epoch_copy(e) for e in range(max(n - self.keep_last, 0) + 1, n + 1)}
        best = self.ranking(history)[:self.keep_best] if self.keep_best else []
        keep |= {folder.best_copy(i + 1) for i in best}
        data = None
        for path in (folder.epoch_copy(n), folder.best_copy(n)):
            if path in keep:
                data = data if data is not None else folder.checkpoint.read_bytes()
                atomic_write_bytes(path, data)
        if self.keep_best:
            atomic_write_json(folder.best_index, [
                {"epoch": i + 1, self.best_metric: history[i][self.best_metric],
                 "file": folder.best_copy(i + 1).name} for i in best])
        for path in folder.copies():
            if path not in keep:
                path.unlink()
