"""What a stage config may hold, and the checks that turn a parsed YAML/TOML document
into a complete, validated stage description (see docs/config.md).

Sections ``model``, ``teacher`` and ``data`` have fixed keys declared here. ``engine``,
``strategy`` and each entry of ``methods`` hold keyword arguments of the stage's strategy
class (``ptcore.strategies.FineTune``, ``Incremental`` or ``Distill``), read from its
signature, so a new strategy option is configurable the day it exists. Their types come from
the signature's annotations (or the default's type); the strategy's own constructor checks
the values further when the run is prepared, still before any training.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

from ptcore.data.augment import AUGMENTS
from ptcore.data.sources import IN_MEMORY_IMAGE_SIZE
from ptcore.runtime.distributed import available_devices, resolve_device
from ptcore.engine.loggers import LOGGERS
from ptcore.engine.optim import OPTIMIZERS
from ptcore.engine.policy import MODES as BEST_MODES
from ptcore.engine.schedules import SCHEDULES

from ptcore.errors import UserError

__all__ = ["ConfigError", "STAGES", "STRATEGY", "ENGINE_KEYS", "METHOD_EXTRAS",
           "validate_config", "check_value", "data_section", "DATA_KEYS"]


class ConfigError(UserError, ValueError):
    """A config that cannot run: says where (the key path) and what is expected."""


STAGES = ("pretrain", "finetune", "incremental", "distill")
# The strategy class each stage runs (pretrain trains from scratch with FineTune).
STRATEGY = {"pretrain": "FineTune", "finetune": "FineTune", "incremental": "Incremental",
            "distill": "Distill"}
# Strategy keyword arguments that belong in the engine section (the loop's settings).
ENGINE_KEYS = ("epochs", "batch_size", "schedule", "warmup", "accumulate", "amp", "grad_clip",
               "device", "progress", "num_workers", "precise_bn")
# Loop options the strategies pass through to the engine as ``**run_options``
# (ptcore.engine.RUN_OPTIONS): logging and checkpoint policy. Their accepted types.
RUN_OPTION_TYPES = {"log": (list, str), "log_every": (int,), "keep_last": (int,),
                    "save_every": (int,),
                    "keep_best": (int,), "best_metric": (str,), "best_mode": (str,),
                    "patience": (int, type(None)), "ema": (float, type(None)),
                    "deterministic": (bool,)}
ENGINE_KEYS += tuple(RUN_OPTION_TYPES) + ("optimizer", "momentum", "nesterov",
                                          "label_smoothing")
ENGINE_KEYS += ("mixup", "cutmix")  # batch mixing alphas (ptcore.data.augment)
# Set by the runner from other sections, never by the config.
_RUNNER_KEYS = {"model", "teacher", "student", "seed"}
# Per-method options that are not strategy arguments (see ptcore/runner/stages.py).
METHOD_EXTRAS = {
    "pretrain": {"model": (str,), "weights": (str,), "save_dtype": (str,)},
    "finetune": {"model": (str,), "weights": (str,), "from_scratch": (bool,),
                 "compare_uncached": (bool,)},
    "distill": {"unlabelled": (bool,)},
}
_DTYPES = ("float16", "bfloat16", "float32", "int8")
_DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")  # ptcore.kd_loss's


@dataclass(frozen=True)
class Key:
    types: tuple
    default: Any = None
    required: bool = False
    help: str = ""


_MODEL = {
    "name": Key((str,), required=True, help="registered model name, e.g. resnet18"),
    "weights": Key((str, type(None)), help="torchvision weights name or a local file"),
    "kwargs": Key((dict,), default={}, help="torchvision constructor arguments"),
}
_DATA = {
    "dataset": Key((str,), default="digits",
                   help="'digits', an ImageFolder directory, or a torchvision dataset name"),
    "root": Key((str, type(None)), help="root of a torchvision dataset given by name"),
    "image_size": Key((int, type(None)), help="input size: in-memory data (digits, glyphs) is "
                      f"rendered at it (null: {IN_MEMORY_IMAGE_SIZE}), image files read at it "
                      "instead of the weights' crop size (null: the weights' own)"),
    "classes": Key((list, type(None)), help="class ids to use (default: all)"),
    "val": Key((float, int), default=0.15),
    "test": Key((float, int), default=0.15),
    "shots": Key((int, type(None)), help="labelled training samples per class"),
    "tasks": Key((list, int, type(None)), help="incremental: class lists, or a task count"),
    "benchmark": Key((str, type(None)), help="incremental: a benchmark by name with its "
                     "official splits and class order (docs/data.md)"),
    "download": Key((bool,), default=False, help="download a torchvision dataset"),
    "preprocess": Key((dict,), default={}, help="override the weights' preprocessing: "
                      "image_size, crop_size, resize_size, interpolation, mean, std"),
    "augment": Key((str, type(None)), help="training-split augmentation: "
                   + ", ".join(AUGMENTS) + " (null: none; docs/data.md)"),
}
DATA_KEYS = tuple(_DATA)
_PREPROCESS = {"image_size", "crop_size", "resize_size", "interpolation", "mean", "std"}
_SECTIONS = {"model": _MODEL, "teacher": _MODEL, "data": _DATA}
_TOP = {"stage", "seed", "out", "model", "teacher", "data", "engine", "strategy", "methods"}


def _type_name(types) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _check_type(value, types, where: str) -> None:
    # bool is an int in Python; a config's `true` is never a count or a rate.
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{where}: expected {_type_name(types)}, got a boolean {value!r}")
    if not isinstance(value, types):
        raise ConfigError(f"{where}: expected {_type_name(types)}, got "
                          f"{type(value).__name__} {value!r}")


def _section(raw, keys: dict[str, Key], where: str, partial: bool) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(keys)}")
    out = {}
    for name, key in keys.items():
        if name not in raw:
            if key.required and not partial:
                raise ConfigError(f"{where}.{name} is required ({key.help})")
            out[name] = key.default
            continue
        _check_type(raw[name], key.types, f"{where}.{name}")
        out[name] = raw[name]
    return out


_ANNOTATION_TYPES = {"int": (int,), "float": (float, int), "str": (str,), "bool": (bool,),
                     "None": (type(None),), "torch.dtype": (str,)}
_ANY = (str, int, float, bool, list, type(None))


def _strategy_params(stage: str) -> dict[str, tuple]:
    """Accepted types of each configurable strategy argument, from its signature (and, for
    distillation, the options its registered terms declare)."""
    import ptcore.strategies as S

    params = {}
    for name, p in inspect.signature(getattr(S, STRATEGY[stage])).parameters.items():
        if name in _RUNNER_KEYS or p.default is inspect.Parameter.empty:
            continue
        ann = p.annotation if isinstance(p.annotation, str) else ""
        parts = [a.strip() for a in ann.split("|")] if ann else []
        types = sum((_ANNOTATION_TYPES.get(a.split("[")[0], (list,) if a.startswith("list")
                                           else _ANY) for a in parts), ())
        params[name] = types or _ANY
    if stage == "distill":  # each registered term's own options (plug-ins too) go to Distill
        from ptcore.strategies.distill.terms import TERMS  # by keyword; the term checks them

        for term in TERMS.values():
            for name in term.options:
                params.setdefault(name, _ANY)
    return params


# Value checks for common options (types are checked first); the strategies check the
# rest when the run is prepared. Each: (test, what is expected).
_POSITIVE_INT = (lambda v: v is None or v >= 1, "a positive int")
_FRACTION = (lambda v: 0 <= v < 1, "a fraction in [0, 1)")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
_ALPHA = (lambda v: v is None or v >= 0, "null/0 (off) or an alpha > 0")
_VALUES = {
    "grad_clip": (lambda v: v is None or 0 < v < math.inf,
                  "null or a finite number > 0 (the largest gradient norm)"),
    "temperature": (lambda v: v > 0, "> 0"), "beta": (lambda v: 0 < v < 1, "in (0, 1)"),
    "soft_weight": _NON_NEGATIVE,
    "hard_weight": _NON_NEGATIVE, "ewc_lambda": _NON_NEGATIVE, "lwf_weight": _NON_NEGATIVE,
    "threshold": (lambda v: v is None or 0 <= v <= 1, "null or a confidence in [0, 1]"),
    "layer_decay": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "val": _FRACTION, "test": _FRACTION,
    "image_size": (lambda v: v is None or v >= 8, "null or >= 8"), "teacher_image_size": (
        lambda v: v is None or v >= 8, "null or >= 8"), "teacher_input_size": (
        lambda v: v is None or v >= 8, "null or >= 8"),
    "shots": _POSITIVE_INT,
    "seed": (lambda v: 0 <= v < 2 ** 32, "an int in [0, 2**32)"),
    "device": (lambda v: v is None or _has_device(v),
               lambda: f"a device this machine has ({', '.join(available_devices())})"),
    "ddp_timeout": (lambda v: v is None or 0 < v < math.inf, "a positive number of seconds"),
    "epochs": _POSITIVE_INT, "batch_size": _POSITIVE_INT, "accumulate": _POSITIVE_INT,
    "memory": _POSITIVE_INT, "topk": _POSITIVE_INT, "unfreeze_every": _POSITIVE_INT,
    "num_workers": (lambda v: v == "auto" or (isinstance(v, int) and v >= 0),
                    "an int >= 0 or 'auto'"),
    "precise_bn": (lambda v: v >= 0, "an int >= 0 (batches)"),
    "ewc_samples": _POSITIVE_INT,
    "log": (lambda v: all(isinstance(n, str) and n.strip() in LOGGERS
                          for n in (v.split(",") if isinstance(v, str) else v)),
            f"a list of loggers from {', '.join(LOGGERS)}"),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "ema": (lambda v: v is None or 0 < v < 1, "null or a decay in (0, 1), e.g. 0.999"),
    "augment": (lambda v: v is None or v in AUGMENTS, f"one of {', '.join(AUGMENTS)}"),
    "mixup": _ALPHA, "cutmix": _ALPHA,
    "log_every": _POSITIVE_INT, "keep_last": _NON_NEGATIVE, "keep_best": _NON_NEGATIVE,
    "save_every": _NON_NEGATIVE,
    "patience": _POSITIVE_INT, "best_mode": (lambda v: v in BEST_MODES, "min or max"),
    "best_metric": (lambda v: v.startswith(("train_", "val_")),
                    "an epoch metric (train_loss, val_loss, val_accuracy, ...)"),
    "lr": (lambda v: v > 0, "> 0"), "weight_decay": (lambda v: v >= 0, ">= 0"),
    "warmup": (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "amp": (lambda v: v in ("auto", "bf16", "fp16", "off", None, False), "auto, bf16, fp16 or off"),
    "cache_dtype": (lambda v: v in _DTYPES, f"one of {', '.join(_DTYPES)}"),
    "divergence": (lambda v: v in _DIVERGENCES, f"one of {', '.join(_DIVERGENCES)}"),
}


def _has_device(name) -> bool:
    try:
        resolve_device(name)
    except ValueError:
        return False
    return True


def check_value(name: str, value, where: str) -> None:
    """The value checks of option ``name`` (its type already checked): numbers finite, and
    the option's own range; ``where`` names it in the error (a key path or --option)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    test, expected = _VALUES.get(name, (lambda v: True, ""))
    try:
        ok = test(value)
    except TypeError:  # e.g. a list where a number is compared
        ok = False
    if not ok:
        expected = expected() if callable(expected) else expected
        raise ConfigError(f"{where} must be {expected}, got {value!r}")


def _options(raw, allowed: dict[str, tuple], where: str) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    for name, value in raw.items():
        _check_type(value, allowed[name], f"{where}.{name}")
        check_value(name, value, f"{where}.{name}")
    return dict(raw)


def _class_id(c) -> bool:
    return isinstance(c, int) and not isinstance(c, bool) and c >= 0


def _check_data(data: dict, stage: str) -> None:
    for name in ("val", "test", "image_size", "shots", "augment"):
        check_value(name, data[name], f"data.{name}")
    if data["augment"] == "none":  # one spelling of "no augmentation" (the CLI's default)
        data["augment"] = None
    if data["classes"] is not None and not all(_class_id(c) for c in data["classes"]):
        raise ConfigError(f"data.classes must be a list of class ids, got {data['classes']!r}")
    _check_data_source(data, stage)
    if data["tasks"] is not None and stage != "incremental":
        raise ConfigError("data.tasks belongs to the incremental stage only")
    tasks = data["tasks"]
    if isinstance(tasks, list) and not (tasks and all(
            isinstance(t, list) and t and all(_class_id(c) for c in t) for t in tasks)):
        raise ConfigError(f"data.tasks must be a task count or a list of non-empty class-id "
                          f"lists, got {tasks!r}")
    if isinstance(tasks, int) and tasks < 1:
        raise ConfigError(f"data.tasks must be a positive task count, got {tasks!r}")


def data_section(raw: dict, stage: str) -> dict:
    """The complete `data` section of a ``stage`` (defaults filled in) from the keys ``raw``
    gives, checked as a config's: what a strategy subcommand's data options make."""
    data = _section(raw, _DATA, "data", partial=True)
    _check_data(data, stage)
    return data


def _check_data_source(data: dict, stage: str) -> None:
    from ptcore.data.benchmarks import BENCHMARKS

    bench = data["benchmark"]
    if bench is not None and (stage != "incremental" or bench not in BENCHMARKS):
        raise ConfigError(f"data.benchmark belongs to the incremental stage and must be one of "
                          f"{', '.join(BENCHMARKS)}, got {bench!r}")
    if bench is not None and isinstance(data["tasks"], list):
        raise ConfigError("data.tasks must be a task count with data.benchmark (the benchmark "
                          "fixes the class order)")
    unknown = sorted(set(data["preprocess"]) - _PREPROCESS)
    if unknown:
        raise ConfigError(f"data.preprocess: unknown key(s) {unknown}; allowed: "
                          f"{sorted(_PREPROCESS)}")
    interpolation = data["preprocess"].get("interpolation", "bilinear")
    if interpolation not in ("nearest", "bilinear", "bicubic"):
        raise ConfigError(f"data.preprocess.interpolation must be nearest, bilinear or "
                          f"bicubic, got {interpolation!r}")


def validate_config(raw: dict, *, source: str = "config", partial: bool = False) -> dict:
    """The complete stage config (defaults filled in) or a ConfigError naming the key.
    ``partial``: a fragment that command-line options complete (required keys may be
    missing; see ptcore/config/cli.py)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(_TOP)}")
    stage = raw.get("stage")
    if stage not in STAGES:
        raise ConfigError(f"{source}: stage must be one of {STAGES}, got {stage!r}")
    if not (partial and "out" not in raw) and not (isinstance(raw.get("out"), str)
                                                   and raw["out"]):
        raise ConfigError(f"{source}: out (the output directory, a string) is required")
    seed = raw.get("seed", 0)
    _check_type(seed, (int,), f"{source}: seed")
    check_value("seed", seed, f"{source}: seed")
    if ("teacher" in raw) != (stage == "distill") and not (partial and "teacher" not in raw):
        raise ConfigError(f"{source}: a teacher section is required by the distill stage and "
                          "only there")
    cfg = {"stage": stage, "seed": seed, "out": raw.get("out")}
    for name in ("model", "teacher", "data"):
        if name in raw or name in ("model", "data"):
            cfg[name] = _section(raw.get(name, {}), _SECTIONS[name], name, partial)
    _check_data(cfg["data"], stage)
    if stage == "incremental" and cfg["data"]["tasks"] is None and not partial:
        raise ConfigError(f"{source}: data.tasks (the classes of each task) is required by the "
                          "incremental stage")
    params = {**_strategy_params(stage), **RUN_OPTION_TYPES}
    engine = {k: v for k, v in params.items() if k in ENGINE_KEYS}
    strategy = {k: v for k, v in params.items() if k not in ENGINE_KEYS}
    cfg["engine"] = _options(raw.get("engine", {}), engine, "engine")
    cfg["strategy"] = _options(raw.get("strategy", {}), strategy, "strategy")
    methods = raw.get("methods", {stage: {}})
    if not isinstance(methods, dict) or not methods:
        raise ConfigError("methods: expected a non-empty mapping of method name to options")
    per_method = {**params, **METHOD_EXTRAS.get(stage, {})}
    cfg["methods"] = {name: _options(opts or {}, per_method, f"methods.{name}")
                      for name, opts in methods.items()}
    return cfg
