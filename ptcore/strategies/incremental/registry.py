"""The hooks an incremental method plugs into, and the registry of methods and presets.

A method is one :class:`Method` subclass in one module, registered with :func:`register`:
it declares what it needs and what it cannot be combined with, and overrides the hooks it
uses. A run composes methods with "+"; :class:`~.strategy.Incremental` calls each part's
hooks in registration order (which is why the built-ins register in the order their steps
must run: bias corrections, exemplar sources, regularisers, classifiers that replace the
head). Parsing, the compatibility checks, presets and the CLI's ``--method`` help are all
read from here."""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Method", "Term", "Step", "METHODS", "PRESETS", "register", "register_preset",
           "parse_method", "method_help", "preset_options"]

METHODS: dict[str, type[Method]] = {}  # name -> method, in registration (= hook) order
# Named methods that are combinations of the parts above.
PRESETS: dict[str, tuple[str, ...]] = {}
_PRESET_OPTIONS: dict[str, dict] = {}
_PRESET_HELP: dict[str, str] = {}
NAIVE = "naive"  # plain fine-tuning: the empty composition


class Term(NamedTuple):
    """One named term of a step's loss: ``weight * value`` is added to the loss (``value``
    itself when ``weight`` is None) and ``value`` is recorded in the history."""
    value: torch.Tensor
    weight: float | None = None


class Step(NamedTuple):
    """What :meth:`Method.loss_terms` sees of one training step."""
    x: torch.Tensor           # the inputs (mixed, with mixup/cutmix)
    y: torch.Tensor           # the labels (head rows)
    logits: torch.Tensor      # [B, C] float32, every head row
    fields: tuple             # the batch fields this method's train_data appended


class Method:
    """An incremental method. Declarations (class attributes) and hooks (methods); a hook
    changes only the method's own state, except :meth:`after_training` (which may change
    the head: it exists to correct it). ``run`` is the :class:`Incremental` (read it: model,
    plan, memory, device, ...), ``t`` the task's index."""

    name: str = ""
    help: str = ""                   # one line for the CLI's --method help
    alone: bool = False              # cannot be combined with anything
    requires: tuple[str, ...] = ()   # at least one of these must be in the composition ...
    requires_why: str = ""           # ... and the reason, when none is
    excludes: dict[str, str] = {}    # other method -> why they cannot be combined
    uses_memory: bool = False        # trains on the exemplar memory (built when a part uses it)
    replays: bool = False            # train_data may append the exemplars after the data given
    trains: bool = True              # False: no gradient step (prototypes from the data)
    unmixed: str = ""                # why its batches cannot be mixed (mixup/cutmix), if so
    every_class: bool = False        # needs training data of every class of the head
    state_key: str | None = None     # its entry in task_<t>/state.pt
    holdout: float = 0.0             # share of each class's memory held out of training
    holdout_beside: bool = False     # ... kept beside the budget rather than taken out of it

    def __init__(self, options, parts: frozenset[str]):
        """``options``: the strategy's keyword arguments (a namespace); ``parts``: the names
        of the composition this instance is part of."""
        self.parts = parts

    def before_task(self, run, t: int, train: list) -> None:
        """Task ``t`` is about to start; the head has not grown yet. ``train``: every task's
        training set, labels = head rows."""

    def train_data(self, run, t: int, train: list, data) -> tuple[object, int]:
        """The data task ``t`` trains on, from ``data`` (what the parts before made of it),
        and how many fields this method appended to each item (read back in
        :attr:`Step.fields`). A part that :attr:`replays` appends the exemplars after the
        samples of ``data`` (the mixed schedule draws each batch's from there), and the parts
        after it keep the order."""
        return data, 0

    def labelled(self, fields: tuple) -> torch.Tensor | None:
        """Which samples of a batch the classification loss learns from (None: all)."""
        return None

    def loss_terms(self, run, step: Step) -> dict[str, Term]:
        """Named terms added to the classification loss of a step, in this order."""
        return {}

    def before_step(self, run, model) -> None:
        """At each optimizer step, on the accumulated gradients before clipping (engine.fit's
        ``before_step``): may edit ``model``'s ``.grad``."""

    def after_training(self, run, t: int, train: list) -> None:
        """Task ``t`` is trained; the memory has not taken its exemplars yet."""

    def after_task(self, run, t: int, train: list) -> None:
        """The memory holds task ``t``'s exemplars: keep what the next tasks need."""

    def scores(self, run, x: torch.Tensor) -> torch.Tensor | None:
        """Class scores [B, C] of inputs ``x`` at test time (None: the model's logits)."""
        return None

    def exemplars(self) -> int:
        """Samples this method stores beyond the strategy's exemplar memory (reported)."""
        return 0

    def state_dict(self):
        """What the method carries from task to task, saved under :attr:`state_key`."""
        return None

    def load_state_dict(self, state, device) -> None:
        pass


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available as ``cls.name`` (also to ``--method``)."""
    if not cls.name or "+" in cls.name or cls.name in PRESETS:
        raise ValueError(f"a method needs a name without '+' that is not a preset's, got "
                         f"{cls.name!r}")
    METHODS[cls.name] = cls
    return cls


def register_preset(name: str, parts: tuple[str, ...], help: str, **options) -> None:
    """A named composition; ``options``: the values of the strategy's arguments it fixes."""
    unknown = [p for p in parts if p not in METHODS]
    if unknown or name in METHODS:
        raise ValueError(f"preset {name!r}: parts {unknown} are not registered, or the name "
                         "is a method's")
    PRESETS[name], _PRESET_OPTIONS[name], _PRESET_HELP[name] = tuple(parts), options, help


def preset_options(method: str) -> dict[str, tuple[str, object]]:
    """Argument -> (preset, value) for the arguments that the presets in ``method`` fix."""
    names = [p.strip() for p in method.lower().split("+")]
    return {k: (p, v) for p in names for k, v in _PRESET_OPTIONS.get(p, {}).items()}


def parse_method(method: str) -> frozenset[str]:
    """The parts of a method such as "lwf+replay" ("naive" is the empty set; a preset
    such as "icarl" stands for its parts)."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str such as 'lwf+replay', got {type(method).__name__}")
    parts = [p.strip() for p in method.lower().split("+")]
    parts = [q for p in parts for q in PRESETS.get(p, (p,))]
    unknown = [p for p in parts if p not in METHODS]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(f"method {method!r}: parts must be distinct, from {tuple(METHODS)} or "
                         f"the presets {tuple(PRESETS)}, joined by '+'")
    chosen = set(parts)
    for name, cls in METHODS.items():
        if name not in chosen:
            continue
        if cls.alone and len(parts) > 1:
            raise ValueError(f"method {method!r}: {name!r} cannot be combined with anything")
        if cls.requires and not chosen & set(cls.requires):
            raise ValueError(f"method {method!r}: {cls.requires_why}")
        for other, why in cls.excludes.items():
            if other in chosen:
                raise ValueError(f"method {method!r}: {why}")
    return frozenset(parts) - {NAIVE}


def method_help() -> str:
    """The ``--method`` help: every method and preset, one clause each."""
    methods = "; ".join(f"{name}: {cls.help}" for name, cls in METHODS.items())
    presets = "; ".join(f"{name} = {'+'.join(PRESETS[name])} ({_PRESET_HELP[name]})"
                        for name in PRESETS)
    return (f"a method, or methods joined by '+' (e.g. lwf+replay). {methods}. "
            f"Presets: {presets}")
