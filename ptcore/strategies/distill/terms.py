"""Distillation methods as plug-ins: each term of the loss (the logit terms kd and dkd, the
feature terms fitnets and at) is one module that registers a :class:`Term` subclass here.

A method names its terms joined by "+" ("dkd+at"); it holds at most one term of each
``kind`` and always one of kind "logits" (``DEFAULT`` when it names none). A term declares
the ``Distill`` keyword arguments it reads (``options``: name → :class:`Option`), the terms
it cannot be combined with (``excludes``), refuses the settings it cannot run with
(:meth:`Term.check`), and returns its part of a step's loss (:meth:`Term.loss`); a term that
holds parameters or state of its own (CRD's embedding heads and memory banks) returns them
as a module from :meth:`Term.attach`, trained and checkpointed with the student. Parsing,
the compatibility checks and the ``--method`` help all read the registry, so a new term is
one module that calls :func:`register` (ptcore/strategies/distill/kd.py is the model).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch
import torch.nn as nn

__all__ = ["Option", "Setup", "Step", "Term", "TERMS", "DEFAULT", "register", "parse_method",
           "check_options", "option_names", "names", "method_help"]

DEFAULT = "kd"  # the logit term of a method that names none
TERMS: dict[str, type[Term]] = {}  # name → term, in the order registered


class Option(NamedTuple):
    """A ``Distill`` keyword argument a term reads: its default and ``check(value, name)``,
    which returns the value to use or raises (it runs whenever the argument is given)."""
    default: Any
    check: Callable[[Any, str], Any] | None = None


@dataclass(frozen=True)
class Setup:
    """The run's settings, as every term may read them (read-only)."""
    mode: str
    topk: int | None
    threshold: float | None
    temperature: float
    soft_weight: float
    hard_weight: float
    divergence: str
    beta: float
    ignore_index: int


@dataclass
class Step:
    """One training batch as the terms see it: the student's logits ``[B, V]``, the labels
    ``[B]`` (``Setup.ignore_index`` on unlabelled rows), the teacher's output (``(logits,)``
    or, with top-k, ``(values [B, K], indices [B, K])``) and, where a term taps layers,
    the student's (adapted) and the teacher's outputs of each layer pair; where a term
    reads it (``Term.index``), each row's position in the training data ``[B]``."""
    logits: torch.Tensor
    labels: torch.Tensor
    teacher: tuple[torch.Tensor, ...]
    student_features: list[torch.Tensor] = field(default_factory=list)
    teacher_features: list[torch.Tensor] = field(default_factory=list)
    index: torch.Tensor | None = None


class Term:
    """One term of the distillation loss; subclasses set the class attributes and
    :meth:`loss`, and are registered with :func:`register`."""
    name: str = ""
    kind: str = ""                    # a method holds at most one term of each kind
    help: str = ""                    # one line for the --method help
    options: dict[str, Option] = {}   # the Distill keyword arguments it reads
    excludes: tuple[str, ...] = ()    # terms it cannot be combined with
    index: bool = False               # loss() reads Step.index (per-sample state)

    def __init__(self, setup: Setup, options: dict[str, Any]):
        self.setup = setup
        self.options = {name: options.get(name, opt.default)
                        for name, opt in type(self).options.items()}
        self.check()

    def check(self) -> None:
        """Raise ValueError (naming them) for settings this term cannot run with."""

    def attach(self, student: nn.Module, teacher: nn.Module, probe: Callable[[], None],
               num_samples: int, seed: int) -> nn.Module | None:
        """Called by ``Distill.fit`` before training (online teacher): hook what the term
        reads and return its own module, or None. The module is trained with the student:
        its parameters are optimised, and its parameters and buffers are checkpointed and
        restored on resume with the student's, so per-sample state (a memory bank) belongs
        in its buffers. ``probe()`` runs both models on one training sample (to size
        layers); ``num_samples``: the training data's length (``Step.index`` < it). Called
        at every fit; return the same module to keep it."""
        return None

    def detach(self) -> None:
        """After a fit: remove the hooks :meth:`attach` placed."""

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        """This term's part of the step's loss under "loss", and any other named scalars
        to log (``train_<name>`` in the history), detached."""
        raise NotImplementedError


def register(term: type[Term]) -> type[Term]:
    """Add ``term`` to the registry (usable as a class decorator); returns it."""
    if not (isinstance(term, type) and issubclass(term, Term)) or not term.name \
            or not term.kind:
        raise TypeError(f"{term!r} must be a Term subclass with a name and a kind")
    name = term.name.lower()
    if "+" in name or name != name.strip():
        raise ValueError(f"term name {term.name!r}: no '+' or surrounding spaces")
    if name in TERMS:
        raise ValueError(f"a distillation term named {name!r} is registered already")
    for opt, spec in term.options.items():
        known = next((t.options[opt] for t in TERMS.values() if opt in t.options), spec)
        if known != spec:
            raise ValueError(f"term {name!r}: option {opt!r} is declared otherwise by "
                             "another term")
    TERMS[name] = term
    return term


def names(kind: str) -> tuple[str, ...]:
    """The registered terms of ``kind``."""
    return tuple(n for n, t in TERMS.items() if t.kind == kind)


def parse_method(method) -> list[type[Term]]:
    """The terms of ``method`` ("kd", "at+dkd", ...): the logit term first, then the others
    in the order registered (so the way a method is written does not change the sum)."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str such as 'kd' or 'at+dkd', got "
                        f"{type(method).__name__}")
    parts = [p.strip() for p in method.lower().split("+")]
    unknown = [n for n in parts if n not in TERMS]
    if unknown:
        raise ValueError(f"method {method!r}: {unknown[0]!r} is no distillation term; the "
                         f"terms are {', '.join(TERMS)}, joined by '+'")
    terms = [TERMS[n] for n in parts]
    if not any(t.kind == TERMS[DEFAULT].kind for t in terms):
        terms.append(TERMS[DEFAULT])
    for kind in dict.fromkeys(t.kind for t in terms):
        if sum(t.kind == kind for t in terms) > 1:
            raise ValueError(f"method {method!r}: at most one of {names(kind)}, joined by "
                             "'+' with the terms of the other kinds")
    for t in terms:
        clash = next((o for o in terms if o.name in t.excludes), None)
        if clash is not None:
            raise ValueError(f"method {method!r}: {t.name} cannot be combined with "
                             f"{clash.name}")
    order = list(TERMS)
    return sorted(terms, key=lambda t: (t.kind != TERMS[DEFAULT].kind, order.index(t.name)))


def check_options(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (the options any registered term declares) checked by their declarations,
    chosen terms or not, so a bad value is refused however the method is set."""
    specs = {name: spec for t in TERMS.values() for name, spec in t.options.items()}
    return {name: specs[name].check(value, name) if specs[name].check else value
            for name, value in given.items()}


def option_names() -> set[str]:
    """Every option a registered term declares."""
    return {name for t in TERMS.values() for name in t.options}


def method_help() -> str:
    """The --method help: every registered term by kind, with its one line."""
    kinds = dict.fromkeys(t.kind for t in TERMS.values())
    lines = "; ".join(f"{kind}: " + ", ".join(f"{n} ({TERMS[n].help})" for n in names(kind))
                      for kind in kinds)
    return (f"distillation terms joined by '+', one of each kind at most (default "
            f"{DEFAULT}). {lines}")
