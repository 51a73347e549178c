"""Every option that more than one strategy subcommand takes (`ptcore finetune`,
`incremental`, `distill`), defined once: its spelling, type, default, help and the config key
it reads (docs/config.md). A subcommand adds them by name with :func:`add_options`, so the
same option cannot drift apart between subcommands; tests/test_cli_options.py compares them.

Where subcommands must differ (an epoch count suited to each, what `--method` lists), the
difference is declared here, per command, beside the shared part. Old spellings keep
working for one release: each is listed in ``RENAMED`` and prints a one-line notice.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Option", "FromSignature", "SHARED", "INCREMENTAL", "RENAMED", "CHANGED",
           "add_options", "add_renamed", "announce_renamed", "OLD_SETTINGS", "int_list"]

COMMANDS = ("finetune", "incremental", "distill", "distill-lm")


def int_list(text: str) -> list[int]:
    """``--classes 5,6,7``: class ids (ints >= 0), comma-separated."""
    try:
        ids = [int(c) for c in str(text).split(",") if c.strip()]
    except ValueError:
        ids = None
    if not ids or any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids >= 0, got {text!r}")
    return ids


def _pairs(text: str) -> dict:
    """``crop_size=384,interpolation=bicubic,mean=0.5/0.5/0.5``."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"takes KEY=VALUE pairs, got {item!r}")
        try:
            out[key] = ([float(v) for v in value.split("/")] if key in ("mean", "std")
                        else value if key == "interpolation" else int(value))
        except ValueError:
            expected = "numbers a/b/c" if key in ("mean", "std") else "an int"
            raise argparse.ArgumentTypeError(f"{key} takes {expected}, got {value!r}") from None
    return out


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


@dataclass(frozen=True)
class FromSignature:
    """A default read from a strategy's signature when the parser is built, so that the
    command line and the Python API cannot disagree (``strategy``: "module:Class", ``name``:
    its keyword)."""
    strategy: str
    name: str

    def read(self):
        import importlib
        import inspect

        module, _, cls = self.strategy.partition(":")
        strategy = getattr(importlib.import_module(module), cls)
        return inspect.signature(strategy).parameters[self.name].default


@dataclass(frozen=True)
class Option:
    """One command-line option. ``defaults``/``detail``: what differs per command (a
    default; a sentence appended to the help, or a callable giving it); ``overrides``: any
    other argparse keyword a command sets its own way (e.g. distill-lm's text ``--data``).
    ``choices`` may be a callable, read when the parser is built (a registry that imports
    lazily)."""
    flags: tuple[str, ...]
    help: str | Callable[[], str]
    type: Callable | None = None
    default: Any = None
    defaults: dict = field(default_factory=dict)
    detail: dict = field(default_factory=dict)
    choices: Any = None
    metavar: str | None = None
    action: str | None = None
    dest: str | None = None
    nargs: str | None = None
    const: Any = None
    overrides: dict = field(default_factory=dict)

    def help_for(self, command: str) -> str:
        text = self.help() if callable(self.help) else self.help
        extra = self.detail.get(command)
        extra = extra() if callable(extra) else extra
        return f"{text} ({extra})" if extra else text

    def add(self, p: argparse.ArgumentParser, command: str) -> argparse.Action:
        kw = {"help": self.help_for(command)}
        if self.action is not None:
            kw["action"] = self.action
        else:
            kw.update(type=self.type, metavar=self.metavar)
            if self.nargs is not None:
                kw.update(nargs=self.nargs, const=self.const)
            choices = self.choices() if callable(self.choices) else self.choices
            if choices is not None:
                kw["choices"] = choices
        default = self.defaults.get(command, self.default)
        kw["default"] = default.read() if isinstance(default, FromSignature) else default
        if self.dest is not None:
            kw["dest"] = self.dest
        kw.update(self.overrides.get(command, {}))
        return p.add_argument(*self.flags, **kw)


def _augments():
    from ptcore.data.augment import AUGMENTS

    return AUGMENTS


def _optimizers():
    from ptcore.engine.optim import OPTIMIZERS

    return OPTIMIZERS


def _schedules():
    from ptcore.engine.schedules import SCHEDULES

    return SCHEDULES


def _registry_help(command: str) -> str:
    """What --method takes, from the strategy's registry of methods (plug-ins included)."""
    if command == "incremental":
        from ptcore.strategies.incremental import method_help
    else:
        from ptcore.strategies.distill.terms import method_help
    return method_help()


def _image_size_help() -> str:
    from ptcore.data.sources import IN_MEMORY_IMAGE_SIZE

    return (f"input size: digits and glyphs are rendered at N (default {IN_MEMORY_IMAGE_SIZE}); "
            "image files are read at N instead of the model's (distill: the student's) "
            "weights' crop size (default: their own preprocessing, docs/data.md)")


_O = Option
AMP_CHOICES = ("auto", "bf16", "fp16", "off")

# Data and model options (config keys: model.name, model.weights, data.<key>, strategy.freeze).
_DATA = {
    "model": _O(("--model",), "registered model name, e.g. resnet50 (`ptcore models` lists "
                "them); required, here or in --config"),
    "weights": _O(("--weights",), "torchvision weights name (DEFAULT, IMAGENET1K_V2, ...) or a "
                  "local state_dict / ptcore checkpoint file (default: random init)"),
    "data": _O(("--data",), "'digits', an image folder, or a torchvision dataset name with "
               "--root (docs/data.md)", default="digits", defaults={"distill-lm": None},
               overrides={"distill-lm": dict(
                   nargs="+", required=True, metavar="SOURCE",
                   help="text files, folders of *.txt, a datasets folder (save_to_disk) or a "
                   "datasets Hub name")}),
    "root": _O(("--root",), "where a torchvision dataset's or a benchmark's files are (its "
               "official train/test splits are used, and an image folder's train/, val/, "
               "test/ subfolders)"),
    "download": _O(("--download",), "download a torchvision dataset that is not under --root",
                   action="store_true", default=False),
    "preprocess": _O(("--preprocess",), "override the model's (distill: the student's) "
                     "weights' preprocessing: image_size, crop_size, resize_size, "
                     "interpolation, mean/std as a/b/c (a size here wins over --image-size)",
                     type=_pairs, default={}, metavar="K=V,..."),
    "image_size": _O(("--image-size",), _image_size_help, type=int, metavar="N"),
    "augment": _O(("--augment",), "training-split augmentation at the model's preprocessing: "
                  "basic (random resized crop + flip), trivial or randaugment (basic + that "
                  "policy); none: the evaluation transform (docs/data.md)",
                  choices=_augments, default="none"),
    "classes": _O(("--classes",), "comma-separated class ids of the data to use (default: all)",
                  type=int_list, detail={"finetune": "relabelled 0..k-1",
                                         "distill": "relabelled 0..k-1"}),
    "shots": _O(("--shots",), "labelled training samples per class (default: all)", type=int,
                detail={"distill": "the rest of the training split is the unlabelled pool"}),
    "val": _O(("--val",), "validation fraction", type=float, default=0.15),
    "test": _O(("--test",), "test fraction", type=float, default=0.15,
               defaults={"incremental": 0.2}),
    "freeze": _O(("--freeze",), "split point frozen throughout, e.g. layer2",
                 detail={"finetune": "partial fine-tuning"}),
    "method": _O(("--method",), "the method",
                 defaults={"incremental": "lwf+replay", "distill": "kd"},
                 detail={"incremental": lambda: _registry_help("incremental"),
                         "distill": lambda: _registry_help("distill")}),
}

# The training loop (engine keys of a config; strategy keywords, see _engine_args.py).
_ENGINE = {
    "epochs": _O(("--epochs",), "training epochs", type=int, default=10,
                 defaults={"incremental": 5}, detail={"incremental": "per task"}),
    "batch_size": _O(("--batch-size",), "samples per batch", type=int, default=32,
                     defaults={"distill": 64}),
    "lr": _O(("--lr",), "peak learning rate", type=float, default=1e-3),
    "weight_decay": _O(("--weight-decay",), "weight decay (never on norms and biases)",
                       type=float, default=0.01, defaults={"incremental": 0.0}),
    "optimizer": _O(("--optimizer",), "adamw, or sgd with --momentum (and --nesterov)",
                    choices=_optimizers, default="adamw"),
    "momentum": _O(("--momentum",), "SGD's momentum", type=float, default=0.9),
    "nesterov": _O(("--nesterov",), "SGD with Nesterov momentum", action="store_true",
                   default=False),
    "label_smoothing": _O(("--label-smoothing",), "cross-entropy against targets with EPS "
                          "spread over all classes", type=float, default=0.0, metavar="EPS"),
    "mixup": _O(("--mixup",), "MixUp of each training batch with Beta(ALPHA, ALPHA) ratios, "
                "e.g. 0.2 (default: off)", type=float, metavar="ALPHA"),
    "cutmix": _O(("--cutmix",), "CutMix of each training batch, e.g. 1.0 (default: off; with "
                 "--mixup: one of the two per batch)", type=float, metavar="ALPHA"),
    "schedule": _O(("--schedule",), "learning-rate schedule", choices=_schedules,
                   default="cosine"),
    "amp": _O(("--amp",), "mixed precision; auto: bf16 on a GPU that has it, off on CPU",
              choices=AMP_CHOICES, default="auto"),
    "precise_bn": _O(("--precise-bn",), "recompute BatchNorm statistics over N training "
                     "batches after each epoch (short runs; MobileNetV3 students need it)",
                     type=int, default=0, metavar="N"),
    "num_workers": _O(("--num-workers",), "processes loading batches (every loader: training, "
                      "evaluation, caches, Fisher, herding); auto: the available CPUs, at most "
                      "8", type=_workers, default=0, metavar="N"),
    "device": _O(("--device",), "cpu, cuda, cuda:1 ... (default: the GPU if present)"),
    "seed": _O(("--seed",), "seeds every generator: the same command gives the same run "
               "(docs/reproducibility.md)", type=int, default=0),
    "out": _O(("--out",), "output directory (required, here or in --config)"),
    "resume": _O(("--resume",), "continue the interrupted run in --out (an error if there is "
                 "none); --resume auto: continue it if there is one, else start (for "
                 "preemptible jobs)", type=_resume_mode, default=False, nargs="?", const=True,
                 metavar="auto"),
    "overwrite": _O(("--overwrite",), "replace the run that --out holds (its checkpoints and "
                    "metrics)", action="store_true", default=False),
    "ddp_timeout": _O(("--ddp-timeout",), "under torchrun: how long a rank waits for the "
                      "others before the job fails (default $PTCORE_DDP_TIMEOUT or 600)",
                      type=float, metavar="SECONDS"),
    # --quiet: the spelling `ptcore finetune` had first; kept so old scripts still run.
    "no_progress": _O(("--no-progress", "--quiet"), "no progress bars", action="store_true",
                      dest="no_progress", default=False),
}


def _divergences():
    from ptcore._kd_args import DIVERGENCES

    return DIVERGENCES


# Distillation: `distill` (image classifiers) and `distill-lm` (Hugging Face causal LMs).
_LM = "distill-lm"
_KD = {
    "teacher": _O(("--teacher",), "the teacher", detail={
        "distill": "a registered model name (`ptcore models`); required, here or in --config",
        _LM: "a checkpoint folder or a Hub id; required for --mode online, and offline to "
             "build or finish --store"}),
    "student": _O(("--student",), "the student", detail={
        "distill": "a registered model name; required, here or in --config",
        _LM: "the checkpoint to start from: a folder or a Hub id (its tokenizer reads "
             "--data)"}, overrides={_LM: dict(required=True)}),
    "mode": _O(("--mode",), "online: the teacher runs beside the student; offline: its "
               "outputs are computed once, cached, and read back", default="online",
               choices=("online", "offline"),
               overrides={_LM: dict(choices=("online", "offline", "labels"), help=(
                   "online: the teacher runs beside the student; offline: its top-k per token "
                   "is computed once into --store and read back; labels: the next tokens "
                   "alone (the baseline)"))}),
    "topk": _O(("--topk",), "distil against the teacher's top-k logits (a cached teacher "
               "stores 2·K numbers per row)", type=int, defaults={_LM: 64},
               detail={_LM: "offline: log-probabilities kept per token, 8·K bytes"}),
    "temperature": _O(("--temperature",), "the softmax temperature of both distributions",
                      type=float, default=4.0, defaults={_LM: 1.0}),
    "soft_weight": _O(("--soft-weight",), "weight of the distillation term", type=float,
                      default=1.0),
    "hard_weight": _O(("--hard-weight",), "weight of the cross-entropy on the labels beside "
                      "the distillation term", type=float, default=1.0, defaults={_LM: 0.0},
                      detail={_LM: "the next tokens"}),
    "divergence": _O(("--divergence",), "the distillation term's divergence",
                     choices=_divergences, default="forward_kl",
                     detail={"distill": "method kd, full logits",
                             _LM: "online only; offline is forward KL"}),
    "beta": _O(("--beta",), "jsd's mixing weight", type=float, default=0.5),
}


def _loggers_help() -> str:
    from ptcore.engine.loggers import LOGGERS

    return (f"comma-separated loggers from {', '.join(LOGGERS)} (metrics.jsonl is always "
            "written); e.g. --log csv,tensorboard")


# Logging and checkpoints: ptcore.engine.RUN_OPTIONS (docs/logging.md).
_LOGGING = {
    "log": _O(("--log",), _loggers_help, default="jsonl", metavar="LOGGERS"),
    "log_every": _O(("--log-every",), "a step record (loss, lr, samples/s) every STEPS "
                    "optimizer steps", type=int, default=50, metavar="STEPS"),
    "save_every": _O(("--save-every",), "also write last.pt every STEPS optimizer steps within "
                     "an epoch; --resume continues from there exactly (default 0: at epoch "
                     "ends only)", type=int, default=0, metavar="STEPS"),
    "keep_last": _O(("--keep-last",), "also keep the last K epochs' checkpoints "
                    "(epoch-NNNN.pt)", type=int, default=0, metavar="K"),
    "keep_best": _O(("--keep-best",), "keep the K best epochs' checkpoints by --best-metric "
                    "(best-epoch-NNNN.pt, ranked in best.json)", type=int, default=0,
                    metavar="K"),
    "best_metric": _O(("--best-metric",), "epoch metric that ranks checkpoints and drives "
                      "--patience", default="val_loss", metavar="NAME"),
    "best_mode": _O(("--best-mode",), "whether a lower or a higher --best-metric is better",
                    choices=("min", "max"), default="min"),
    "patience": _O(("--patience",), "stop after EPOCHS epochs without a strict improvement of "
                   "--best-metric (default: never)", type=int, metavar="EPOCHS"),
    "ema": _O(("--ema",), "also keep, validate and checkpoint an exponential moving average of "
              "the weights with this decay per step (e.g. 0.999)", type=float, metavar="DECAY"),
    "deterministic": _O(("--deterministic",), "torch's deterministic algorithms only (for "
                        "GPUs: CPU runs are bit-identical without it; "
                        "docs/reproducibility.md)", action="store_true", default=False),
}

SHARED: dict[str, Option] = {**_DATA, **_ENGINE, **_LOGGING, **_KD}


def _selections():
    from ptcore.strategies.incremental.memory import SELECTIONS

    return SELECTIONS


def _count_or_all(text: str):
    """``--mas-samples 200`` or ``all`` (None: every sample of the task)."""
    if text == "all":
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a count >= 1 or 'all', got {text!r}")
    return count


def _inc(name: str) -> FromSignature:
    return FromSignature("ptcore.strategies.incremental.strategy:Incremental", name)


# `ptcore incremental`'s method options: strategy keys of a config of the same names
# (docs/incremental.md), their defaults Incremental's own.
INCREMENTAL: dict[str, Option] = {
    "memory": _O(("--memory",), "samples the memory holds in all (replay, der, er-ace, a-gem, "
                 "bic, gdumb; default %(default)s)", type=int, default=_inc("memory"),
                 metavar="N"),
    "selection": _O(("--selection",), "how exemplars are chosen (replay, der, er-ace, a-gem; "
                    "default %(default)s)", choices=_selections, default=_inc("selection")),
    "replay_schedule": _O(("--replay-schedule",), "union: epochs over the new data and the "
                          "exemplars together; mixed: epochs over the new data, each batch "
                          "joined by as many random exemplars (default %(default)s)",
                          choices=("union", "mixed"), default=_inc("replay_schedule")),
    "lwf_weight": _O(("--lwf-weight",), "weight of LwF's distillation term (lwf; default "
                     "%(default)s)", type=float, default=_inc("lwf_weight"), metavar="W"),
    "ewc_lambda": _O(("--ewc-lambda",), "EWC's penalty strength λ (ewc; default %(default)s)",
                     type=float, default=_inc("ewc_lambda"), metavar="LAMBDA"),
    "bic_holdout": _O(("--bic-holdout",), "share of each class's memory held out to fit BiC's "
                      "correction (bic; default %(default)s)", type=float,
                      default=_inc("bic_holdout"), metavar="SHARE"),
    "der_weight": _O(("--der-weight",), "weight of DER's stored-logit term (der; default "
                     "%(default)s)", type=float, default=_inc("der_weight"), metavar="W"),
    "agem_batch": _O(("--agem-batch",), "exemplars in A-GEM's reference batch (a-gem; default "
                     "%(default)s)", type=int, default=_inc("agem_batch"), metavar="N"),
    "mas_lambda": _O(("--mas-lambda",), "MAS's penalty strength (mas; default %(default)s, the "
                     "paper's; the tests' small model does best near 0.1)", type=float,
                     default=_inc("mas_lambda"), metavar="LAMBDA"),
    "mas_samples": _O(("--mas-samples",), "samples per task MAS's importance is measured on, "
                      "or all (mas; default %(default)s)", type=_count_or_all,
                      default=_inc("mas_samples"), metavar="N"),
}
_OWN = {"incremental": INCREMENTAL}  # options of one command alone, by command

# Spellings of one release ago: old flag -> (the commands that had it, the option now).
# incremental's --classes was the head's classes; the data's classes were --data-classes.
RENAMED = {
    "--data-root": (("finetune",), "--root"),
    "--labels-per-class": (("distill",), "--shots"),
    "--test-fraction": (("incremental",), "--test"),
    "--data-classes": (("incremental",), "--classes"),
    "--mode": (("finetune",), "--tune"),
}


# Options whose meaning changed with the renaming: a notice for one release.
CHANGED = {("incremental", "--classes"): "--classes now selects the data's classes, as in "
           "finetune and distill (the head's classes are --head-classes)"}
# Run-folder settings (run.json) recorded under the old names, per command: old -> new
# (ptcore.runtime.settings.renamed_settings reads an old record under the new names).
OLD_SETTINGS = {"finetune": {"data_root": "root"}, "distill": {"labels_per_class": "shots"},
                "incremental": {"test_fraction": "test", "classes": "head_classes",
                                "data_classes": "classes"}}


class _Renamed(argparse.Action):
    """An old spelling: stores into the new option and records a notice (printed once by
    :func:`announce_renamed`, not here: argparse may parse argv more than once)."""

    def __init__(self, option_strings, dest, new: str = "", **kw):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        notices = list(getattr(namespace, "renamed_options", []))
        notices.append(f"{option_string} is now {self.new} (the old spelling goes in the "
                       "next release)")
        namespace.renamed_options = notices


def add_options(p: argparse.ArgumentParser, command: str, *names: str,
                group: str | None = None) -> None:
    """Add the shared options ``names`` (or ``command``'s own, e.g. :data:`INCREMENTAL`) to
    ``command``'s parser ``p`` (in that order, in the argument group ``group`` if given),
    each with its old spelling where it had one."""
    target = p.add_argument_group(group) if group else p
    for name in names:
        option = SHARED[name] if name in SHARED else _OWN[command][name]
        add_renamed(target, command, option.add(target, command))


def add_renamed(p, command: str, action: argparse.Action) -> None:
    """Accept ``action``'s old spelling in ``command`` (``RENAMED``), hidden from --help."""
    for old, (commands, new) in RENAMED.items():
        if command in commands and new in action.option_strings:
            p.add_argument(old, dest=action.dest, action=_Renamed, new=new, type=action.type,
                           choices=action.choices, default=argparse.SUPPRESS,
                           help=argparse.SUPPRESS)


def announce_renamed(args: argparse.Namespace, command: str) -> None:
    """Print one line per old spelling ``args`` came with (rank 0 only), and drop the record
    so it is not taken for a setting of the run."""
    from ptcore.runtime.distributed import is_main

    notices = vars(args).pop("renamed_options", [])
    argv = getattr(args, "argv", None) or []
    notices += [text for (cmd, flag), text in CHANGED.items() if cmd == command and any(
        a == flag or a.startswith(flag + "=") for a in argv)]
    if is_main():
        for notice in dict.fromkeys(notices):
            print(f"ptcore {command}: {notice}", file=sys.stderr)
