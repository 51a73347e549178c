"""Feature-level distillation between named layers of teacher and student: FitNets hints
(Romero et al. 2015: a learned adapter maps the student's features onto the teacher's,
mean squared error) and attention transfer (Zagoruyko & Komodakis 2017: the normalised
spatial map of squared activations, averaged over channels, matched in L2).

Layers are chosen by module path (``model.get_submodule``) and read through forward hooks,
so any architecture works without changing it. Where the student's feature map is not
the teacher's size it is resized (bilinear) to the teacher's; FitNets adds a 1×1
convolution (or a linear map for flat features) only where the channel counts differ."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["FEATURE_METHODS", "Taps", "StudentWithAdapters", "parse_pairs", "feature_loss"]

FEATURE_METHODS = ("fitnets", "at")


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


def _adapter(student: torch.Tensor, teacher: torch.Tensor) -> nn.Module:
    if student.dim() != teacher.dim() or student.dim() not in (2, 4):
        raise ValueError(f"features: cannot map a student feature of shape "
                         f"{list(student.shape[1:])} onto a teacher feature of shape "
                         f"{list(teacher.shape[1:])}; pair [N, C] with [N, C] or [N, C, H, W] "
                         "with [N, C, H, W]")
    if student.shape[1] == teacher.shape[1]:
        return nn.Identity()
    if student.dim() == 2:
        return nn.Linear(student.shape[1], teacher.shape[1])
    return nn.Conv2d(student.shape[1], teacher.shape[1], 1)


class StudentWithAdapters(nn.Module):
    """The student, plus the FitNets adapters, as the one module the engine trains (so the
    adapters are optimised, checkpointed and synchronised under DDP with the student).
    ``forward`` returns the student's logits and leaves the adapted features of the tapped
    layers in ``hints`` (computed inside forward, where DDP tracks the parameters)."""

    def __init__(self, student: nn.Module, pairs: list[tuple[str, str]]):
        super().__init__()
        self.student, self.pairs = student, pairs
        self.adapters = nn.ModuleList(nn.Identity() for _ in pairs)
        self.taps = Taps(student, [s for s, _ in pairs], "student")
        self.hints: list[torch.Tensor] = []

    def build_adapters(self, teacher_features: list[torch.Tensor], seed: int) -> None:
        """Size the adapters from one probe forward (the student's taps hold its output)."""
        torch.manual_seed(seed)
        self.adapters = nn.ModuleList(
            _adapter(self.taps.outputs[s], t) for (s, _), t in zip(self.pairs, teacher_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.student(x)
        self.hints = [a(self.taps.outputs[s]) for (s, _), a in zip(self.pairs, self.adapters)]
        return logits


def _attention(f: torch.Tensor) -> torch.Tensor:
    return F.normalize(f.float().pow(2).mean(1).flatten(1), dim=1)


def feature_loss(kind: str, student: list[torch.Tensor], teacher: list[torch.Tensor],
                 rows: torch.Tensor) -> torch.Tensor:
    """Mean over layer pairs of the per-sample loss, summed over ``rows`` (a bool mask of
    the rows that count): "fitnets" the squared error per element (mean over the feature),
    "at" the squared L2 distance of the normalised attention maps."""
    total = 0.0
    for s, t in zip(student, teacher):
        s, t = _resize(s, t)[rows], t[rows].float()
        if kind == "fitnets":
            per_row = (s.float() - t).pow(2).flatten(1).mean(1)
        else:
            if s.dim() != 4 or t.dim() != 4:
                raise ValueError("attention transfer needs [N, C, H, W] feature maps on both "
                                 f"sides, got {list(s.shape)} and {list(t.shape)}")
            per_row = (_attention(s) - _attention(t)).pow(2).sum(1)
        total = total + per_row.sum()
    return total / len(student)
