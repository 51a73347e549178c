"""The teacher as a distilled student sees it, and the loss between the two.

One module (:class:`TeacherView`) defines what the teacher contributes for a batch, so the
online path (run every step) and the offline path (run once into a FeatureCache) cannot
drift apart: inputs resized to the teacher's size, then its logits, or its top-k logits
and their class indices packed into one float32 row that a FeatureCache stores as is.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import ptcore
from ptcore.strategies._distill_dkd import dkd_loss

__all__ = ["TeacherView", "unpack", "distill_loss", "MAX_TOPK_CLASSES"]

# Class indices ride in float32 next to the values; float32 holds integers exactly to 2**24.
MAX_TOPK_CLASSES = 2 ** 24


class TeacherView(nn.Module):
    """``teacher`` on inputs resized (bilinear) to ``input_size``; output ``[B, V]``
    logits, or with ``topk`` = K a float32 ``[B, 2K]`` row: the K largest logits (sorted,
    largest first), then their class indices."""

    def __init__(self, teacher: nn.Module, *, input_size: tuple[int, int] | None = None,
                 topk: int | None = None):
        super().__init__()
        self.teacher, self.input_size, self.topk = teacher, input_size, topk

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return self.teacher(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(x)
        if self.topk is None:
            return logits
        V = logits.shape[-1]
        if self.topk > V:
            raise ValueError(f"topk={self.topk} is more than the teacher's {V} classes")
        if V > MAX_TOPK_CLASSES:
            raise ValueError(f"topk caching stores class indices as float32, exact up to "
                             f"{MAX_TOPK_CLASSES} classes; the teacher has {V}")
        values, indices = logits.float().topk(self.topk, dim=-1)
        return torch.cat([values, indices.float()], dim=-1)

    def extra_repr(self) -> str:  # part of the FeatureCache fingerprint
        return f"input_size={self.input_size}, topk={self.topk}"


def unpack(rows: torch.Tensor, topk: int | None) -> tuple[torch.Tensor, ...]:
    """TeacherView output → ``(logits,)`` or ``(values [B, K], indices [B, K] int64)``."""
    if topk is None:
        return (rows,)
    return rows[:, :topk], rows[:, topk:].long()


def _kd(student: torch.Tensor, teacher: tuple[torch.Tensor, ...], **kw):
    values = teacher[0].to(student.dtype)
    if len(teacher) == 1:
        return ptcore.kd_loss(student, values, **kw)
    return ptcore.kd_loss_topk(student, values, teacher[1], **kw)


def distill_loss(student_logits: torch.Tensor, labels: torch.Tensor,
                 teacher: tuple[torch.Tensor, ...], *, temperature: float, soft_weight: float,
                 hard_weight: float, threshold: float | None = None,
                 ignore_index: int = -100, divergence: str = "forward_kl", beta: float = 0.5,
                 dkd: tuple[float, float] | None = None) -> dict:
    r"""Mean over the rows that count of

    .. math::
        w_{soft}\,T^2\,KL(p_t\|p_s) + w_{hard}\,\mathrm{CE}(s, y)\,[y \ne \text{ignore}]

    with :math:`p = \mathrm{softmax}(\cdot/T)` (the teacher's over its K kept classes
    when ``teacher`` is top-k). ``divergence``/``beta`` replace the forward KL as in
    :func:`ptcore.kd_loss` (full logits only); ``dkd`` = (α, β) replaces the soft term by
    :func:`~ptcore.strategies._distill_dkd.dkd_loss`, whose target class is the label, or
    the teacher's top class on unlabelled rows. Labelled rows always count; unlabelled rows
    (label ``ignore_index``) count when the teacher's confidence, its top probability
    :math:`\max p_t` at the distillation temperature T (the target these rows learn from),
    is at least ``threshold``. The confidence comes with the loss itself (the kernel's row
    statistics; DKD's two-class target term), so no other pass over the teacher's logits
    runs; the unlabelled rows' losses are computed per row and the others masked out, which
    gives them no gradient. Returns ``{"loss", "pseudo"}`` (pseudo: the share of the
    batch's rows that learn from the teacher alone)."""
    labelled = labels != ignore_index
    unlabelled = ~labelled
    if dkd is not None:
        target = torch.where(labelled, labels, teacher[0].argmax(-1))
        rows, confidence = dkd_loss(student_logits, teacher[0], target, temperature=temperature,
                                    alpha=dkd[0], beta=dkd[1], reduction="none",
                                    return_target_prob=True)
        pseudo = unlabelled if threshold is None else unlabelled & (confidence >= threshold)
        counted = labelled | pseudo
        soft = torch.where(counted, rows, 0.0).sum()
        hard = F.cross_entropy(student_logits[labelled].float(), labels[labelled],
                               reduction="sum") if labelled.any() else soft * 0.0
        return {"loss": (soft_weight * soft + hard_weight * hard) / counted.sum().clamp_min(1),
                "pseudo": pseudo.float().mean()}
    # kd_loss gives ignore_index rows no loss at all, so the two kinds of rows go separately.
    kw = dict(temperature=temperature, soft_weight=soft_weight)
    if len(teacher) == 1:
        kw.update(divergence=divergence, beta=beta)
    total = _kd(student_logits[labelled], tuple(t[labelled] for t in teacher),
                labels=labels[labelled], hard_weight=hard_weight, reduction="sum", **kw)
    rows = _kd(student_logits[unlabelled], tuple(t[unlabelled] for t in teacher),
               reduction="none", return_row_signals=threshold is not None, **kw)
    pseudo = unlabelled
    if threshold is not None:
        rows, signals = rows
        confident = signals.teacher_confidence >= threshold
        rows = torch.where(confident, rows, 0.0)
        pseudo = unlabelled.clone()
        pseudo[unlabelled] = confident
    counted = (labelled.sum() + pseudo.sum()).clamp_min(1)
    return {"loss": (total + rows.sum()) / counted, "pseudo": pseudo.float().mean()}
