"""The training-loop options every strategy subcommand shares (`ptcore finetune`,
`incremental`, `distill`): one spelling, one help text, one mapping to strategy keywords."""
from __future__ import annotations

import argparse

from ptcore.commands.options import add_options

_LOOP = ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "momentum", "nesterov")
_MIXING = ("label_smoothing", "mixup", "cutmix")
_RUN = ("schedule", "amp", "precise_bn", "num_workers", "device", "seed", "out", "resume",
        "overwrite", "ddp_timeout", "no_progress")
# ptcore.engine.RUN_OPTIONS (docs/logging.md)
_LOGGING = ("log", "log_every", "save_every", "keep_last", "keep_best", "best_metric",
            "best_mode", "patience", "ema", "deterministic")


def add_engine_arguments(p: argparse.ArgumentParser, command: str, *,
                         label_smoothing: bool = False) -> None:
    """Add --epochs --batch-size --lr --weight-decay --optimizer --momentum --nesterov
    (--label-smoothing --mixup --cutmix if asked) --schedule --amp --precise-bn
    --num-workers --device --seed --out --resume --overwrite --ddp-timeout --no-progress
    (ptcore/commands/options.py, with ``command``'s defaults) and the logging and checkpoint
    options --log --log-every --save-every --keep-last --keep-best --best-metric --best-mode
    --patience --ema --deterministic. ``--out`` is not required here: a --config may give it."""
    names = _LOOP + (_MIXING if label_smoothing else ()) + _RUN
    add_options(p, command, *names, group="training loop")
    add_options(p, command, *_LOGGING, group="logging and checkpoints")


def start_run(args: argparse.Namespace, stage: str, *, data_fixed: dict | None = None,
              **merge) -> None:
    """What a strategy subcommand does first, before any data or model loads: merge its
    --config and check every option's value (:func:`ptcore.config.merge_config` with
    ``merge``; --device among them), gather its data options into ``args.data_options`` (a
    config's `data` section, :func:`ptcore.config.cli.data_options`), then seed every
    generator with --seed, so that the same command gives the same run, bit for bit
    (docs/reproducibility.md)."""
    from ptcore.config import merge_config
    from ptcore.commands.options import announce_renamed
    from ptcore.config.cli import data_options
    from ptcore.runtime.rng import seed_everything

    announce_renamed(args, stage)
    merge_config(args, stage, **merge)
    args.data_options = data_options(args, stage, aliases=merge.get("aliases"),
                                     fixed=data_fixed)
    seed_everything(args.seed)


def engine_kwargs(args: argparse.Namespace) -> dict:
    """The strategy keyword arguments of the options above (all but --out/--resume)."""
    return {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "weight_decay": args.weight_decay, "schedule": args.schedule, "amp": args.amp,
            "precise_bn": args.precise_bn, "device": args.device, "seed": args.seed,
            "progress": not args.no_progress, "num_workers": args.num_workers,
            "log": args.log, "log_every": args.log_every, "save_every": args.save_every,
            "keep_last": args.keep_last, "keep_best": args.keep_best,
            "best_metric": args.best_metric, "best_mode": args.best_mode,
            "patience": args.patience, "ema": args.ema, "deterministic": args.deterministic,
            "optimizer": args.optimizer,
            "momentum": args.momentum, "nesterov": args.nesterov,
            **({"label_smoothing": args.label_smoothing, "mixup": args.mixup,
                "cutmix": args.cutmix} if "label_smoothing" in args else {})}


def strategy_kwargs(args: argparse.Namespace, **options) -> dict:
    """The strategy's keyword arguments: the config's options without a command-line option
    (``args.config_options``, see ptcore/config/cli.py), then the engine options, then the
    command's own ``options``."""
    import torch

    kw = {**getattr(args, "config_options", {}), **engine_kwargs(args), **options}
    if isinstance(kw.get("cache_dtype"), str):
        kw["cache_dtype"] = getattr(torch, kw["cache_dtype"])
    return kw
