"""Experiment loggers beside ``metrics.jsonl`` (which is always written: resume and the
reports read it): CSV files and TensorBoard event files (see docs/logging.md).

Only rank 0 logs; the loop opens loggers there alone. Steps are optimizer updates (the
scheduler's count, so they continue across a resume). A step record holds rank 0's own
loss of the batch that ended the update (reducing it over ranks would cost a collective per
record), the first parameter group's learning rate and the samples per second of all ranks
since the previous record. Epoch records are the loop's per-epoch metrics, logged at the
step that ended the epoch. On resume each file is cut back to the checkpoint: ``epochs.csv``
is rewritten from the checkpoint's history, ``steps.csv`` keeps the rows up to the resumed
step, and TensorBoard purges the events after the resumed step (``purge_step``; all of them when a
run starts over in the folder, e.g. after ``--overwrite``)."""
from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

from ptcore.runtime.files import atomic_write_bytes

__all__ = ["LOGGERS", "check_loggers", "Loggers", "STEPS_CSV", "EPOCHS_CSV", "TENSORBOARD"]

LOGGERS = ("jsonl", "csv", "tensorboard")
STEPS_CSV, EPOCHS_CSV, TENSORBOARD = "steps.csv", "epochs.csv", "tensorboard"
_STEP_COLUMNS = ("step", "epoch", "loss", "lr", "samples_per_s")


def check_loggers(log, log_every) -> tuple[str, ...]:
    """``log``: names from LOGGERS, as a list or comma-separated text ("csv,tensorboard");
    ``jsonl`` is always on and may be named. Checked before any training: an unknown name,
    or TensorBoard asked for without the ``tensorboard`` package, is an error."""
    names = [s.strip() for s in log.split(",")] if isinstance(log, str) else log
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"log must be a list of logger names ({', '.join(LOGGERS)}), got "
                         f"{log!r}")
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ValueError(f"log: unknown logger(s) {unknown}; choose from {', '.join(LOGGERS)}")
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"log_every must be a positive int (optimizer steps), got "
                         f"{log_every!r}")
    if "tensorboard" in names:
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
        except ImportError:
            raise ValueError("log: tensorboard needs the tensorboard package "
                             "(pip install tensorboard, or ptcore[tensorboard])") from None
    return tuple(dict.fromkeys(["jsonl", *names]))


def _csv_text(rows: list[dict], columns) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _scalars(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Loggers:
    """The CSV and TensorBoard loggers named in ``names`` writing to ``out``, resumed at
    optimizer step ``step`` with the checkpoint's ``history``."""

    def __init__(self, names, out: Path, *, step: int, history: list[dict], world: int):
        self.out, self.world = Path(out), world
        self.csv = "csv" in names
        self.tb = None
        self.samples, self.since = 0, time.perf_counter()
        if self.csv:
            path = self.out / STEPS_CSV
            kept = []
            if path.is_file():
                with open(path, newline="") as f:
                    kept = [r for r in csv.DictReader(f) if _int(r.get("step")) <= step]
            atomic_write_bytes(path, _csv_text(kept, _STEP_COLUMNS))
            self._epochs_csv(history)
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / TENSORBOARD),
                                    purge_step=step + 1 if step > 0 else 0)

    def count(self, samples: int) -> None:
        """Samples this rank consumed (every batch): the throughput's numerator."""
        self.samples += samples

    def step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        now = time.perf_counter()
        rate = self.samples * self.world / max(now - self.since, 1e-9)
        self.samples, self.since = 0, now
        row = {"step": step, "epoch": epoch, "loss": loss, "lr": lr, "samples_per_s": rate}
        if self.csv:
            with open(self.out / STEPS_CSV, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=_STEP_COLUMNS).writerow(row)
        if self.tb is not None:
            for k in ("loss", "lr", "samples_per_s"):
                self.tb.add_scalar(f"step/{k}", row[k], step)

    def epoch(self, step: int, history: list[dict]) -> None:
        """The last record of ``history`` (the epoch just ended, at optimizer step ``step``)."""
        if self.csv:
            self._epochs_csv(history)
        if self.tb is not None:
            for k, v in _scalars(history[-1]).items():
                self.tb.add_scalar(f"epoch/{k}", v, step)
            self.tb.flush()

    def _epochs_csv(self, history: list[dict]) -> None:
        # Rewritten whole: the columns are the union over epochs (a val split may start late).
        columns = list(dict.fromkeys(k for r in history for k in r))
        atomic_write_bytes(self.out / EPOCHS_CSV, _csv_text(history, columns or ["epoch"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _int(text) -> float:
    try:
        return int(text)
    except (TypeError, ValueError):
        return math.inf  # a torn row: dropped
