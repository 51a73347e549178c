"""The training-loop options every strategy subcommand shares (`ptcore finetune`,
`incremental`, `distill`): one spelling, one help text, one mapping to strategy keywords."""
from __future__ import annotations

import argparse

AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def add_engine_arguments(p: argparse.ArgumentParser, *, epochs: int, batch_size: int,
                         lr: float = 1e-3, weight_decay: float = 0.01,
                         epochs_help: str = "training epochs",
                         label_smoothing: bool = False) -> None:
    """Add --epochs --batch-size --lr --weight-decay --optimizer --momentum --nesterov
    (--label-smoothing --mixup --cutmix if asked) --schedule --amp --precise-bn
    --num-workers --device --seed --out --resume --overwrite --ddp-timeout --no-progress and
    the logging and checkpoint options. ``--out`` is not required here: a --config may give it."""
    from ptcore.engine.optim import OPTIMIZERS
    from ptcore.engine.schedules import SCHEDULES

    g = p.add_argument_group("training loop")
    g.add_argument("--epochs", type=int, default=epochs, help=epochs_help)
    g.add_argument("--batch-size", type=int, default=batch_size)
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    g.add_argument("--weight-decay", type=float, default=weight_decay,
                   help="weight decay (never on norms and biases)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw",
                   help="adamw, or sgd with --momentum (and --nesterov)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD's momentum")
    g.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    if label_smoothing:  # the strategies whose loss is a plain cross-entropy
        g.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS",
                       help="cross-entropy against targets with EPS spread over all classes")
        g.add_argument("--mixup", type=float, metavar="ALPHA", help="MixUp of each training "
                       "batch with Beta(ALPHA, ALPHA) ratios, e.g. 0.2 (default: off)")
        g.add_argument("--cutmix", type=float, metavar="ALPHA", help="CutMix of each training "
                       "batch, e.g. 1.0 (default: off; with --mixup: one of the two per batch)")
    g.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                   help="learning-rate schedule")
    g.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                   help="mixed precision; auto: bf16 on a GPU that has it, off on CPU")
    g.add_argument("--precise-bn", type=int, default=0, metavar="N",
                   help="recompute BatchNorm statistics over N training batches after each "
                   "epoch (short runs; MobileNetV3 students need it)")
    g.add_argument("--num-workers", type=_workers, default=0, metavar="N",
                   help="processes loading batches (every loader: training, evaluation, "
                   "caches, Fisher, herding); auto: the available CPUs, at most 8")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the GPU if present)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", help="output directory (required, here or in --config)")
    g.add_argument("--resume", nargs="?", const=True, default=False, type=_resume_mode,
                   metavar="auto", help="continue the interrupted run in --out (an error if "
                   "there is none); --resume auto: continue it if there is one, else start "
                   "(for preemptible jobs)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run that --out holds (its checkpoints and metrics)")
    g.add_argument("--ddp-timeout", type=float, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others before the "
                   "job fails (default $PTCORE_DDP_TIMEOUT or 600)")
    # --quiet: the spelling `ptcore finetune` had first; kept so old scripts still run.
    g.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                   help="no progress bars")
    _add_run_arguments(p)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """--log --log-every --save-every --keep-last --keep-best --best-metric --best-mode
    --patience --ema --deterministic:
    ptcore.engine.RUN_OPTIONS (docs/logging.md)."""
    from ptcore.engine.loggers import LOGGERS

    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--log", default="jsonl", metavar="LOGGERS",
                   help=f"comma-separated loggers from {', '.join(LOGGERS)} (metrics.jsonl is "
                   "always written); e.g. --log csv,tensorboard")
    g.add_argument("--log-every", type=int, default=50, metavar="STEPS",
                   help="a step record (loss, lr, samples/s) every STEPS optimizer steps")
    g.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                   help="also write last.pt every STEPS optimizer steps within an epoch; "
                   "--resume continues from there exactly (default 0: at epoch ends only)")
    g.add_argument("--keep-last", type=int, default=0, metavar="K",
                   help="also keep the last K epochs' checkpoints (epoch-NNNN.pt)")
    g.add_argument("--keep-best", type=int, default=0, metavar="K",
                   help="keep the K best epochs' checkpoints by --best-metric "
                   "(best-epoch-NNNN.pt, ranked in best.json)")
    g.add_argument("--best-metric", default="val_loss", metavar="NAME",
                   help="epoch metric that ranks checkpoints and drives --patience")
    g.add_argument("--best-mode", choices=("min", "max"), default="min",
                   help="whether a lower or a higher --best-metric is better")
    g.add_argument("--patience", type=int, metavar="EPOCHS",
                   help="stop after EPOCHS epochs without a strict improvement of "
                   "--best-metric (default: never)")
    g.add_argument("--ema", type=float, metavar="DECAY",
                   help="also keep, validate and checkpoint an exponential moving average of "
                   "the weights with this decay per step (e.g. 0.999)")
    g.add_argument("--deterministic", action="store_true",
                   help="torch's deterministic algorithms only (for GPUs: CPU runs are "
                   "bit-identical without it; docs/reproducibility.md)")


def int_list(text: str) -> list[int]:
    """``--classes 5,6,7``: class ids (ints >= 0), comma-separated."""
    try:
        ids = [int(c) for c in str(text).split(",") if c.strip()]
    except ValueError:
        ids = None
    if not ids or any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids >= 0, got {text!r}")
    return ids


def _workers(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 0 or 'auto', got {text!r}") \
            from None


def _resume_mode(text: str):
    if text != "auto":
        raise argparse.ArgumentTypeError(f"--resume takes no value or 'auto', got {text!r}")
    return "auto"


def start_run(args: argparse.Namespace, stage: str, *, data_fixed: dict | None = None,
              **merge) -> None:
    """What a strategy subcommand does first, before any data or model loads: merge its
    --config and check every option's value (:func:`ptcore.config.merge_config` with
    ``merge``; --device among them), gather its data options into ``args.data_options`` (a
    config's `data` section, :func:`ptcore.config.cli.data_options`), then seed every
    generator with --seed, so that the same command gives the same run, bit for bit
    (docs/reproducibility.md)."""
    from ptcore.config import merge_config
    from ptcore.config.cli import data_options
    from ptcore.runtime.rng import seed_everything

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
