"""The four stages a config describes (pretrain, finetune, incremental, distill), each run
as a comparison of methods on the same data and seed. `ptcore run` and `ptcore demo` both
use them.

A stage runs in two steps: :func:`prepare` loads and splits the data and builds every
method's model and strategy (random weights) so that a bad class list, split point or
option fails before anything trains; :meth:`Prepared.run` then trains each method from
its real weights and returns ``{method: record}`` for results.json.
"""
from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ptcore.config import ConfigError
from ptcore.config.recipe import load_data
from ptcore.runtime.rng import seed_everything
from ptcore.config.schema import METHOD_EXTRAS
from ptcore.runner.provenance import write_provenance

__all__ = ["Prepared", "prepare", "pretrained_path"]


@dataclass
class Prepared:
    cfg: dict
    data: dict  # split name -> dataset (or list of task datasets)
    context: dict = field(default_factory=dict)  # stage facts for the report
    on_method: Callable[[str, dict], None] | None = None

    def run(self) -> dict:
        records = {}
        for name, opts in self.cfg["methods"].items():
            seed_everything(self.cfg["seed"])  # same initial weights for every method
            records[name] = _RUN[self.cfg["stage"]](self, name, opts)
            if self.on_method is not None:
                self.on_method(name, records[name])
        return records


# -- building blocks ---------------------------------------------------------------------
def _strategy_kwargs(cfg: dict, opts: dict) -> dict:
    """Engine defaults < strategy options < the method's own, as strategy arguments."""
    extras = METHOD_EXTRAS.get(cfg["stage"], {})
    kw = {**cfg["engine"], **cfg["strategy"],
          **{k: v for k, v in opts.items() if k not in extras}}
    if "cache_dtype" in kw:
        kw["cache_dtype"] = getattr(torch, kw["cache_dtype"])
    return {"seed": cfg["seed"], **kw}


def _model(section: dict, *, num_classes=None, pretrained: bool = True):
    """The model a config section describes; ``pretrained=False``: random weights."""
    from ptcore.models import create_model

    return create_model(section["name"], num_classes=num_classes,
                        weights=section["weights"] if pretrained else None, progress=False,
                        **section["kwargs"])


def _fresh_head(model):
    """A new task gets a new head even when the weights' head has the same size."""
    from ptcore.models import get_heads

    for head in get_heads(model):
        head.reset_parameters()
    return model


def _num_classes(dataset) -> int:
    from ptcore.data import targets_of

    return len(targets_of(dataset).unique())


def _median_epoch(history: list[dict]) -> float:
    return statistics.median(r["seconds"] for r in history) if history else 0.0


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _load_data(cfg: dict) -> dict:
    """The stage's splits (:func:`ptcore.config.recipe.load_data`), with a test split: every
    stage reports test accuracy."""
    out = load_data(cfg["data"], stage=cfg["stage"], seed=cfg["seed"],
                    model=cfg["model"]["name"], weights=cfg["model"]["weights"])
    if not len(out["test"]):
        raise ConfigError("data.test is 0: the stage reports test accuracy, keep a test split "
                          "(or, with data.shots, test on the samples that are not shots)")
    return out


# -- pretrain and finetune (FineTune) ----------------------------------------------------
def _finetune_model(p: Prepared, opts: dict, *, real: bool):
    """The method's model: the config's, or another architecture (``model``) with its
    own ``weights``; without weights, or with ``from_scratch``, from random weights."""
    section = p.cfg["model"]
    if "model" in opts:
        section = {"name": opts["model"], "weights": None, "kwargs": {}}
    section = {**section, "weights": opts.get("weights", section["weights"])}
    pretrained = real and section["weights"] is not None and not opts.get("from_scratch")
    model = _model(section, num_classes=_num_classes(p.data["test"]), pretrained=pretrained)
    return _fresh_head(model) if pretrained else model


_SAVE_DTYPES = ("float32", "float16", "bfloat16")


def pretrained_path(cfg: dict, method: str) -> Path:
    """Where the pretrain stage saves ``method``'s model."""
    from ptcore.runtime.run_folder import MODEL

    return Path(cfg["out"]) / method / MODEL


def _finetune(p: Prepared, name: str, opts: dict) -> dict:
    from ptcore.runtime.files import atomic_torch_save
    from ptcore.strategies import FineTune

    kw = _strategy_kwargs(p.cfg, opts)
    model = _finetune_model(p, opts, real=True)
    record = {}
    if opts.get("compare_uncached"):
        # One epoch through the frozen layers, for the per-epoch cost the cache saves.
        probe = FineTune(copy.deepcopy(model), **{**kw, "cache": False, "epochs": 1,
                                                  "progress": False})
        record["uncached_epoch_seconds"] = probe.fit(p.data["train"])["history"][0]["seconds"]
    ft = FineTune(model, **kw)
    summary = ft.fit(p.data["train"], p.data["val"])
    record.update({
        "accuracy": ft.evaluate(p.data["test"])["accuracy"],
        "train_seconds": summary["seconds"], "epochs": len(summary["history"]),
        "epoch_seconds": _median_epoch(summary["history"]),
        "trainable_params": _trainable(ft.model), "mode": summary["mode"],
        "frozen_through": summary["frozen_through"],
        "cached_epochs": len(summary["cached_epochs"]), "history": summary["history"]})
    if p.cfg["stage"] == "pretrain":
        path = pretrained_path(p.cfg, name)
        state = model.state_dict()
        if "save_dtype" in opts:  # e.g. float16: half the file, for weights that ship
            dtype = getattr(torch, opts["save_dtype"])
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        atomic_torch_save(state, path)
        record["weights_file"] = str(path)
        write_provenance(path, p.cfg, name, record, p.context, image_size=p.data["image_size"])
    return record


def _check_finetune(p: Prepared) -> None:
    from ptcore.strategies import FineTune

    for name, opts in p.cfg["methods"].items():
        if opts.get("save_dtype", "float16") not in _SAVE_DTYPES:
            raise ConfigError(f"methods.{name}.save_dtype must be one of {_SAVE_DTYPES}, got "
                              f"{opts['save_dtype']!r}")
        FineTune(_finetune_model(p, opts, real=False), **_strategy_kwargs(p.cfg, opts))
    p.context.update(dataset=p.cfg["data"]["dataset"], dataset_size=p.data["dataset_size"],
                     classes=_num_classes(p.data["test"]), train_samples=len(p.data["train"]),
                     test_samples=len(p.data["test"]))


# -- incremental ---------------------------------------------------------------------------
def _incremental(p: Prepared, name: str, opts: dict) -> dict:
    from ptcore.strategies import Incremental

    inc = Incremental(_model(p.cfg["model"]), **_strategy_kwargs(p.cfg, opts))
    res = inc.fit(p.data["train"], p.data["test"])
    record = {k: v for k, v in res.items() if k != "history"}
    record["task_names"] = [",".join(map(str, cs)) for cs in res["tasks"]]
    record["task_histories"] = res["history"]
    return record


def _check_incremental(p: Prepared) -> None:
    from ptcore.strategies import Incremental

    for opts in p.cfg["methods"].values():
        kw = _strategy_kwargs(p.cfg, opts)
        # With pretrained weights the head holds `classes`; size the throwaway model so.
        head = len(kw["classes"]) if kw.get("classes") else None
        Incremental(_model(p.cfg["model"], num_classes=head, pretrained=False), **kw)
    p.context.update(tasks=len(p.data["train"]),
                     train_samples=sum(len(t) for t in p.data["train"]))


# -- distill -------------------------------------------------------------------------------
def _distill_models(p: Prepared, *, real: bool):
    k = _num_classes(p.data["test"])
    teacher = _model(p.cfg["teacher"], num_classes=None if real else k, pretrained=real)
    student = _model(p.cfg["model"], num_classes=k, pretrained=real)
    return teacher, student


def _distill(p: Prepared, name: str, opts: dict) -> dict:
    from ptcore import engine
    from ptcore.strategies import Distill

    teacher, student = _distill_models(p, real=True)
    if "teacher_accuracy" not in p.context:
        p.context["teacher_accuracy"] = engine.evaluate(teacher, p.data["test"])["accuracy"]
    d = Distill(teacher, student, **_strategy_kwargs(p.cfg, opts))
    pool = p.data["unlabelled"] if opts.get("unlabelled", True) else None
    summary = d.fit(p.data["train"], pool, p.data["val"])
    return {"accuracy": d.evaluate(p.data["test"])["accuracy"],
            "train_seconds": summary["seconds"], "epochs": len(summary["history"]),
            "epoch_seconds": _median_epoch(summary["history"]),
            "labelled": summary["labelled"], "unlabelled": summary["unlabelled"],
            "teacher_samples": summary["teacher_samples"], "mode": summary["mode"],
            "topk": summary["topk"], "history": summary["history"]}


def _check_distill(p: Prepared) -> None:
    from ptcore.strategies import Distill

    for opts in p.cfg["methods"].values():
        Distill(*_distill_models(p, real=False), **_strategy_kwargs(p.cfg, opts))
    p.context.update(labelled=len(p.data["train"]),
                     unlabelled=len(p.data["unlabelled"] or []))


_RUN = {"pretrain": _finetune, "finetune": _finetune, "incremental": _incremental,
        "distill": _distill}
_CHECK = {"pretrain": _check_finetune, "finetune": _check_finetune,
          "incremental": _check_incremental, "distill": _check_distill}


def _check_weights(cfg: dict, produced: set[str]) -> None:
    """Weights files must exist, unless an earlier stage of the same run writes them."""
    sections = [("model", cfg["model"]), ("teacher", cfg.get("teacher"))]
    sections += [(f"methods.{n}", o) for n, o in cfg["methods"].items()]
    for where, section in sections:
        w = (section or {}).get("weights")
        if w and ("/" in w or w.endswith((".pt", ".pth"))) and not Path(w).is_file() \
                and str(Path(w)) not in produced:
            raise ConfigError(f"{where}.weights: file {w!r} does not exist")


def prepare(cfg: dict, *, produced: set[str] = frozenset(),
            on_method: Callable[[str, dict], None] | None = None) -> Prepared:
    """Everything but the training, so that errors come first. ``produced``: weights files
    that earlier stages of the same run will write."""
    _check_weights(cfg, produced)
    p = Prepared(cfg, _load_data(cfg), on_method=on_method)
    _CHECK[cfg["stage"]](p)
    return p
