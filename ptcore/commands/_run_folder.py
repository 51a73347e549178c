"""An output folder belongs to one run. Before a strategy command trains, it claims --out:
a folder holding another run's checkpoints is refused unless --resume or --overwrite is
given; --resume refuses a folder whose run.json records other settings (naming them), or
one that holds no run (--resume auto starts one instead). Under torchrun rank 0 decides and
every rank learns the outcome; a worker restarted by ``torchrun --max-restarts`` resumes."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

RUN = "run.json"
# Files whose presence means a run has trained here (in --out or one level down: task_<t>/).
_ARTIFACTS = ("last.pt", "state.pt", "metrics.jsonl")
# Options a resume may change: they do not change what the run computes so far (epochs may
# grow to train longer; logging and which checkpoints are kept, docs/logging.md).
_FREE = {"func", "command", "argv", "resume", "overwrite", "no_progress", "device", "config",
         "ddp_timeout", "num_workers", "out", "epochs", "log", "log_every", "save_every",
         "keep_last", "keep_best", "best_metric", "best_mode", "patience",
         "data_options"}  # derived from options compared one by one


def _artifacts(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    return sorted(p for name in _ARTIFACTS for p in [*out.glob(name), *out.glob(f"*/{name}")])


def _claim(out: Path, command: str, settings: dict, resume, overwrite: bool):
    from ptcore.commands.options import upgrade_settings
    from ptcore.engine import RunFolderError, atomic_write_json
    from ptcore.runtime.files import fsync_dir
    from ptcore.runtime.settings import differences

    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {str(out)!r} is a file, not a folder")
    if overwrite:
        for p in _artifacts(out):
            p.unlink()
            fsync_dir(p.parent)
    held = _artifacts(out)
    record = out / RUN
    if held and not resume:
        raise RunFolderError(f"--out {str(out)!r} holds another run ({held[0].name}); pass "
                             "--resume to continue it or --overwrite to replace it")
    if not held and resume is True and not record.is_file():
        raise RunFolderError(f"nothing to resume in --out {str(out)!r} (no run there: check "
                             "the folder; --resume auto starts a run when there is none)")
    if resume and record.is_file():
        try:
            old = upgrade_settings(command, json.loads(record.read_text())["settings"])
        except (ValueError, KeyError, TypeError) as e:
            raise RunFolderError(f"{str(record)!r} is damaged ({e}); start over with "
                                 "--overwrite") from e
        diff = differences(old, settings)
        if diff:
            raise RunFolderError(f"--out {str(out)!r} holds a run made with other settings ("
                                 + "; ".join(diff) + "); resume with the same options, or "
                                 "start over with --overwrite")
    atomic_write_json(record, {"command": command, "settings": settings})
    return "auto" if resume else False


def open_run_folder(args, command: str):
    """Claim ``args.out`` for this run; returns the strategy's ``resume`` (False or "auto").
    Also joins the process group (with the --ddp-timeout) and quiets ranks other than 0."""
    from ptcore.runtime import distributed as D
    from ptcore.runtime.settings import plain

    if args.ddp_timeout is not None:
        os.environ[D.TIMEOUT_ENV] = str(args.ddp_timeout)
    D.setup()
    if not D.is_main():
        warnings.filterwarnings("ignore")  # rank 0 speaks for the job
    if args.resume and args.overwrite:
        from ptcore.config import ConfigError

        raise ConfigError("--resume and --overwrite exclude each other")
    resume, overwrite = args.resume, args.overwrite
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume, overwrite = "auto", False  # a restarted worker continues the job
    settings = plain({k: v for k, v in vars(args).items() if k not in _FREE})
    return D.on_main(lambda: _claim(Path(args.out), command, settings, resume, overwrite),
                     f"opening --out {args.out}")
