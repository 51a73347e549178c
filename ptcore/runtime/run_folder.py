"""The run folder (``--out``, ``out_dir``) and its one owner, :class:`RunFolder`. Every file
a run keeps there is named here, and every layer asks the owner for it: the commands claim
the folder, the engine reads and writes its checkpoint, the strategies write the final
files. An output folder belongs to one run: another run's files are refused unless the run
is resumed or overwritten, and a resumed run must have the same settings (naming the ones
that differ). Only rank 0 writes; every write is atomic (:mod:`ptcore.runtime.files`).

::

    run.json            the command and its options (written by a command's claim)
    last.pt             the engine's checkpoint: the latest state, what resume continues from
    metrics.jsonl       one record per epoch
    epoch-NNNN.pt, best-epoch-NNNN.pt, best.json   the copies the checkpoint policy keeps
    model.pt            the trained model's state_dict (final)
    summary.json        finetune and distill: settings, history, final metrics (final)
    results.json        incremental: accuracy matrices and their summaries (final)
    task_<t>/           incremental: task t's last.pt while it trains, state.pt once done
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ptcore.errors import UserError
from ptcore.runtime import distributed as D
from ptcore.runtime.files import (atomic_torch_save, atomic_write_json, fsync_dir,
                                  remove_stale_temps)
from ptcore.runtime.settings import differences, renamed_settings

__all__ = ["RunFolder", "RunFolderError", "RUN", "CHECKPOINT", "METRICS", "STATE", "MODEL",
           "SUMMARY", "RESULTS", "BEST_INDEX", "EPOCH_COPY", "BEST_COPY", "TASK", "TASK_STATES"]

RUN = "run.json"
CHECKPOINT = "last.pt"
METRICS = "metrics.jsonl"
STATE = "state.pt"
MODEL = "model.pt"
SUMMARY = "summary.json"
RESULTS = "results.json"
BEST_INDEX = "best.json"
EPOCH_COPY = "epoch-{:04d}.pt"
BEST_COPY = "best-epoch-{:04d}.pt"
TASK = "task_{}"
TASK_STATES = f"{TASK.format('*')}/{STATE}"  # the finished tasks of an incremental run
_COPY = re.compile(r"^(epoch|best-epoch)-\d+\.pt$")  # EPOCH_COPY or BEST_COPY
# Files whose presence means a run has trained here (in the folder or one level down).
_TRAINED = (CHECKPOINT, STATE, METRICS)


class RunFolderError(UserError, ValueError):
    """An output folder that holds another run, or no run to resume."""


class RunFolder(os.PathLike):
    """The owner of one run folder. A path-like object, so it goes wherever a folder does
    (``fit(out_dir=...)``); :meth:`of` gives the owner back from either."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.claimed: str | None = None  # the command whose run this is (see claim)
        self.resume: bool | str = False  # what the claim decided: False or "auto"

    @classmethod
    def of(cls, folder: str | os.PathLike) -> RunFolder:
        return folder if isinstance(folder, RunFolder) else cls(folder)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def label(self) -> str:
        """The folder as errors name it: the option, where a command claimed it."""
        return f"--out {str(self.path)!r}" if self.claimed else repr(str(self.path))

    # -- names ---------------------------------------------------------------------------
    @property
    def record(self) -> Path:
        return self.path / RUN

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def state(self) -> Path:
        return self.path / STATE

    @property
    def best_index(self) -> Path:
        return self.path / BEST_INDEX

    def epoch_copy(self, epoch: int) -> Path:
        return self.path / EPOCH_COPY.format(epoch)

    def best_copy(self, epoch: int) -> Path:
        return self.path / BEST_COPY.format(epoch)

    def copies(self) -> list[Path]:
        """The checkpoint copies here (epoch-NNNN.pt, best-epoch-NNNN.pt)."""
        return [p for p in self.path.iterdir() if _COPY.match(p.name)]

    def task(self, t: int) -> RunFolder:
        """Task ``t``'s subfolder (an incremental run trains each task in its own)."""
        return RunFolder(self.path / TASK.format(t))

    def held(self, *patterns: str) -> list[Path]:
        """The files here matching the glob ``patterns`` (relative to the folder)."""
        if not self.path.is_dir():
            return []
        return sorted(p for pattern in patterns for p in self.path.glob(pattern))

    # -- one run per folder --------------------------------------------------------------
    def claim(self, command: str, settings: dict, resume, overwrite: bool, *,
              renamed: dict[str, str] | None = None,
              defaults: dict | None = None) -> RunFolder:
        """Make this folder ``command``'s run (rank 0 decides, every rank learns the outcome):
        ``overwrite`` deletes another run's files; without ``resume`` a folder where a run
        has trained is refused; ``resume=True`` refuses a folder with no run, and a resume
        refuses one whose ``run.json`` records other ``settings`` (a record made before
        options were ``renamed``, old name -> new, is read under the new names; one made
        before an option existed, with the option's value in ``defaults``). Records the
        settings; sets :attr:`resume` to what the strategy gets (False, or "auto")."""
        self.claimed = command
        self.resume = D.on_main(
            lambda: self._claim(command, settings, resume, overwrite, renamed or {},
                                defaults or {}),
            f"opening --out {self.path}")
        return self

    def _claim(self, command: str, settings: dict, resume, overwrite: bool, renamed: dict,
               defaults: dict):
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.label} is a file, not a folder")
        trained = [p for name in _TRAINED for p in (name, f"*/{name}")]
        if overwrite:
            for p in self.held(*trained):
                p.unlink()
                fsync_dir(p.parent)
        held = self.held(*trained)
        if held and not resume:
            raise self._another_run("run", held[0].name)
        if not held and resume is True and not self.record.is_file():
            raise self.nothing_to_resume("run")
        if resume and self.record.is_file():
            try:
                old = renamed_settings(json.loads(self.record.read_text())["settings"], renamed)
                old = {**{k: v for k, v in defaults.items() if k in settings}, **old}
            except (ValueError, KeyError, TypeError) as e:
                raise RunFolderError(f"{str(self.record)!r} is damaged ({e}); start over with "
                                     "--overwrite") from e
            self.check_settings(old, settings, f"the run in {self.label}")
        atomic_write_json(self.record, {"command": command, "settings": settings})
        return "auto" if resume else False

    def refuse_another_run(self, *patterns: str, what: str = "run") -> None:
        """Raise RunFolderError if files matching ``patterns`` are here (rank 0 looks)."""
        held = D.on_main(lambda: [str(p.relative_to(self.path)) for p in self.held(*patterns)],
                         f"reading {self.path}")
        if held:
            raise self._another_run(what, held[0])

    def _another_run(self, what: str, held: str) -> RunFolderError:
        hint = ("pass --resume to continue it or --overwrite to replace it" if self.claimed
                else "resume it (resume=True) or replace it (delete the folder)")
        return RunFolderError(f"{self.label} holds another {what} ({held}); {hint}")

    def nothing_to_resume(self, missing: str) -> RunFolderError:
        """The error of a resume (not "auto") that finds no ``missing`` file here."""
        return RunFolderError(f"nothing to resume in {self.label} (no {missing} there: check "
                              "the folder; --resume auto, resume=\"auto\", starts a run when "
                              "there is none)")

    def check_settings(self, old: dict, new: dict, what: str, error=RunFolderError) -> None:
        """Raise ``error`` naming every setting of a resumed run (``what``, recorded with
        ``old``) that differs from ``new``."""
        diff = differences(old, new)
        if diff:
            raise error(f"{what} was made with other settings (" + "; ".join(diff) + "): "
                        "resume with the same ones, or start over with --overwrite")

    def remove_stale_temps(self) -> None:
        """Delete what interrupted writes left here (rank 0, which alone writes here)."""
        D.on_main(lambda: remove_stale_temps(self.path), f"cleaning {self.path}")

    # -- final files ---------------------------------------------------------------------
    def write_model(self, state: dict) -> None:
        if D.is_main():
            atomic_torch_save(state, self.path / MODEL)

    def write_summary(self, summary: dict) -> None:
        if D.is_main():
            atomic_write_json(self.path / SUMMARY, summary)

    def write_results(self, results: dict) -> None:
        if D.is_main():
            atomic_write_json(self.path / RESULTS, results)

    def finish(self, model_state: dict, summary: dict) -> None:
        """A strategy's final files: ``model.pt`` and ``summary.json``. In a folder a command
        claimed, the command completes the summary (test metrics, options) and writes it
        once (:meth:`write_summary`)."""
        self.write_model(model_state)
        if not self.claimed:
            self.write_summary(summary)
