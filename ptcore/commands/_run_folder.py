"""The CLI's side of the run folder (:mod:`ptcore.runtime.run_folder` owns it): joins the
process group, turns the options into the settings a resume must match, and claims --out.
A worker restarted by ``torchrun --max-restarts`` resumes."""
from __future__ import annotations

import os
import warnings

from ptcore.commands.options import OLD_SETTINGS

# Options a resume may change: they do not change what the run computes so far (epochs may
# grow to train longer; logging and which checkpoints are kept, docs/logging.md).
_FREE = {"func", "command", "argv", "resume", "overwrite", "no_progress", "device", "config",
         "ddp_timeout", "num_workers", "out", "epochs", "log", "log_every", "save_every",
         "keep_last", "keep_best", "best_metric", "best_mode", "patience",
         "data_options"}  # derived from options compared one by one


def open_run_folder(args, command: str):
    """Claim ``args.out`` for this run; returns its :class:`RunFolder`, whose ``resume`` (False
    or "auto") the strategy gets. Also joins the process group (with the --ddp-timeout) and
    quiets ranks other than 0."""
    from ptcore.runtime import distributed as D
    from ptcore.runtime.run_folder import RunFolder
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
    return RunFolder(args.out).claim(command, settings, resume, overwrite,
                                     renamed=OLD_SETTINGS.get(command),
                                     defaults=option_defaults(command) if resume else None)


def option_defaults(command: str) -> dict:
    """``command``'s options at their defaults, as parsed values: a run folder recorded before
    an option existed was made with its default (an added option defaults to the behaviour
    before it), so a resume reads the missing setting as that."""
    import argparse
    import importlib

    from ptcore.runtime.settings import plain

    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(f"ptcore.commands.{command.replace('-', '_')}").add_parser(sub)
    defaults = {}
    for action in sub.choices[command]._actions:
        value = action.default
        if action.dest == argparse.SUPPRESS or value is argparse.SUPPRESS:
            continue
        if isinstance(value, str) and action.type is not None:
            value = action.type(value)  # as argparse converts a string default
        defaults[action.dest] = value
    return plain(defaults)
