"""Feature terms: distillation between named layers of teacher and student (fitnets.py,
at.py). Layers are chosen by module path (``model.get_submodule``) and read through forward
hooks, so any architecture works without changing it. Where the student's feature map is
not the teacher's size it is resized (bilinear) to the teacher's; a term may map the
student's features onto the teacher's through a learned adapter, trained with the
student."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ptcore._kd_args import check_float
from ptcore.strategies.distill.terms import Option, Step, Term, names

__all__ = ["FeatureTerm", "Taps", "StudentWithAdapters", "parse_pairs", "feature_loss"]


def parse_pairs(pairs) -> list[tuple[str, str]]:
    """``[("student.path", "teacher.path"), ...]`` from pairs or "student:teacher" strings."""
    if isinstance(pairs, str) or not isinstance(pairs, (list, tuple)) or not pairs:
        raise TypeError(f"features must be a non-empty list of (student layer, teacher "
                        f"layer) pairs or 'student:teacher' strings, got {pairs!r}")
    out = []
    for p in pairs:
        pair = tuple(p.split(":")) if isinstance(p, str) else tuple(p)
        if len(pair) != 2 or not all(isinstance(n, str) and n for n in pair):
            raise ValueError(f"features: {p!r} is not a (student layer, teacher layer) pair")
        out.append(pair)
    return out


class Taps:
    """Forward hooks on the submodules at ``paths`` of ``model``, keeping their latest
    outputs in ``outputs`` (path → tensor)."""

    def __init__(self, model: nn.Module, paths: list[str], what: str):
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for path in paths:
            try:
                module = model.get_submodule(path)
            except AttributeError as e:
                raise ValueError(f"features: the {what} has no layer {path!r} ({e})") from None
            self.handles.append(module.register_forward_hook(self._keep(path)))

    def _keep(self, path: str):
        def hook(module, args, output):
            self.outputs[path] = output
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4 and x.shape[-2:] != like.shape[-2:]:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
    return x


class StudentWithAdapters(nn.Module):
    """The student, plus a feature term's adapters and the terms' own modules (``terms``, by
    term name; :meth:`Term.attach`), as the one module the engine trains (so they are
    optimised, checkpointed and synchronised under DDP with the student).
    ``forward`` returns the student's logits and leaves the adapted features of the tapped
    layers in ``hints`` (computed inside forward, where DDP tracks the parameters)."""

    def __init__(self, student: nn.Module, pairs: list[tuple[str, str]]):
        super().__init__()
        self.student, self.pairs = student, pairs
        self.adapters = nn.ModuleList(nn.Identity() for _ in pairs)
        self.terms = nn.ModuleDict()
        self.taps = Taps(student, [s for s, _ in pairs], "student")
        self.hints: list[torch.Tensor] = []

    def build_adapters(self, teacher_features: list[torch.Tensor], seed: int,
                       adapter: Callable[[torch.Tensor, torch.Tensor], nn.Module]) -> None:
        """Size the adapters from one probe forward (the student's taps hold its output)."""
        torch.manual_seed(seed)
        self.adapters = nn.ModuleList(
            adapter(self.taps.outputs[s], t) for (s, _), t in zip(self.pairs, teacher_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.student(x)
        self.hints = [a(self.taps.outputs[s]) for (s, _), a in zip(self.pairs, self.adapters)]
        return logits


def feature_loss(per_row: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 student: list[torch.Tensor], teacher: list[torch.Tensor],
                 rows: torch.Tensor) -> torch.Tensor:
    """Mean over layer pairs of ``per_row(student feature, teacher feature)`` (float32
    teacher, the student's resized to it), summed over ``rows`` (a bool mask of the rows
    that count)."""
    total = 0.0
    for s, t in zip(student, teacher):
        total = total + per_row(_resize(s, t)[rows], t[rows].float()).sum()
    return total / len(student)


def _pairs(value, name: str):
    return None if value is None else parse_pairs(value)


def _nonneg(value, name: str) -> float:
    return check_float(value, name, nonneg=True)


def pairing_error(method, features) -> ValueError:
    return ValueError(f"features (layer pairs) go with a feature method "
                      f"{names(FeatureTerm.kind)} and only then; method {method!r}, features "
                      f"{features!r}")


class FeatureTerm(Term):
    """A term between the layer pairs ``features``, weighted by ``feature_weight``: the
    strategy taps those layers on both sides (online teacher only) and hands their outputs
    to :meth:`per_row`."""
    kind = "features"
    options = {"features": Option(None, _pairs), "feature_weight": Option(1.0, _nonneg)}
    # None, or (student feature, teacher feature) -> the module that maps the student's
    # onto the teacher's, sized from one probe batch and trained with the student.
    adapter: Callable[[torch.Tensor, torch.Tensor], nn.Module] | None = None

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return self.options["features"]

    def check(self) -> None:
        if self.pairs is None:
            raise pairing_error(self.name, None)
        if self.setup.mode == "offline":
            raise ValueError(f"{self.name} reads the teacher's intermediate layers every "
                             "step, so it needs mode='online'")

    @staticmethod
    def per_row(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The loss of each row ``[n]`` between one pair's features."""
        raise NotImplementedError

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        every = torch.ones(len(step.logits), dtype=torch.bool, device=step.logits.device)
        hint = feature_loss(self.per_row, step.student_features, step.teacher_features,
                            every) / len(step.logits)
        return {"loss": self.options["feature_weight"] * hint, "feature": hint.detach()}
