"""The logit term "dkd": decoupled knowledge distillation (Zhao et al. 2022), built from the
fused ``ptcore.kd_loss``: the target-class term (TCKD) is a KL between two-class
distributions and the non-target term (NCKD) a KL over the other classes, which is kd_loss
with the target class masked to -inf (the op's masked-vocabulary case)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ptcore._kd_args import check_float
from ptcore.ops import kd_loss
from ptcore.strategies.distill.terms import Option, Step, Term, register

__all__ = ["DKD", "dkd_loss", "dkd_term_loss"]


def _binary(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """[n, 2] logits whose softmax at ``temperature`` is (p_target, 1 - p_target) of
    softmax(logits / T): the target logit, and T·logsumexp of the others / T."""
    is_target = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, target[:, None], True)
    rest = (logits / temperature).masked_fill(is_target, float("-inf")).logsumexp(-1)
    return torch.stack([logits.gather(1, target[:, None])[:, 0], temperature * rest], -1)


def dkd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *,
             temperature: float, alpha: float = 1.0, beta: float = 8.0,
             reduction: str = "batchmean", return_target_prob: bool = False):
    r"""Per row :math:`T^2(\alpha\,KL(b_t\|b_s) + \beta\,KL(\hat p_t\|\hat p_s))` with
    :math:`b = (p_y, 1-p_y)`, :math:`p = \mathrm{softmax}(z/T)`, and :math:`\hat p` the
    softmax over the classes other than ``target`` :math:`y`. Shapes: logits ``[n, V]``,
    ``target`` ``[n]`` int64; ``reduction`` "sum", "batchmean" or "none" ([n]). With
    ``return_target_prob`` also returns the teacher's :math:`p_y` at T ([n], no gradient),
    read off the two-class rows the target-class term builds anyway."""
    teacher = teacher.to(student.dtype)
    is_target = torch.zeros_like(student, dtype=torch.bool).scatter_(1, target[:, None], True)
    binary_t = _binary(teacher, target, temperature)
    tckd = kd_loss(_binary(student, target, temperature), binary_t,
                   temperature=temperature, reduction=reduction)
    nckd = kd_loss(student.masked_fill(is_target, float("-inf")),
                   teacher.masked_fill(is_target, float("-inf")),
                   temperature=temperature, reduction=reduction)
    loss = alpha * tckd + beta * nckd
    if not return_target_prob:
        return loss
    return loss, torch.softmax(binary_t.float() / temperature, dim=-1)[:, 0]


def dkd_term_loss(student_logits: torch.Tensor, labels: torch.Tensor,
                  teacher: tuple[torch.Tensor, ...], *, temperature: float, soft_weight: float,
                  hard_weight: float, alpha: float, beta: float,
                  threshold: float | None = None, ignore_index: int = -100) -> dict:
    r""":func:`~ptcore.strategies.distill.kd.kd_term_loss` with the soft term replaced by
    :func:`dkd_loss` (α, β), whose target class is the label, or the teacher's top class on
    unlabelled rows (full teacher logits: ``teacher`` = ``(logits,)``). The threshold reads
    the teacher's probability of the target class at T from the two-class rows the
    target-class term builds anyway: for an unlabelled row, its top probability. Returns
    ``{"loss", "pseudo"}``."""
    labelled = labels != ignore_index
    unlabelled = ~labelled
    target = torch.where(labelled, labels, teacher[0].argmax(-1))
    rows, confidence = dkd_loss(student_logits, teacher[0], target, temperature=temperature,
                                alpha=alpha, beta=beta, reduction="none",
                                return_target_prob=True)
    pseudo = unlabelled if threshold is None else unlabelled & (confidence >= threshold)
    counted = labelled | pseudo
    soft = torch.where(counted, rows, 0.0).sum()
    hard = F.cross_entropy(student_logits[labelled].float(), labels[labelled],
                           reduction="sum") if labelled.any() else soft * 0.0
    return {"loss": (soft_weight * soft + hard_weight * hard) / counted.sum().clamp_min(1),
            "pseudo": pseudo.float().mean()}


def _nonneg(value, name: str) -> float:
    return check_float(value, name, nonneg=True)


@register
class DKD(Term):
    name, kind = "dkd", "logits"
    help = "decoupled KD, weights dkd_alpha and dkd_beta"
    options = {"dkd_alpha": Option(1.0, _nonneg), "dkd_beta": Option(8.0, _nonneg)}

    def check(self) -> None:
        s = self.setup
        if s.divergence != "forward_kl":
            raise ValueError(f"divergence={s.divergence!r} needs full logits and method 'kd': "
                             "DKD distils with the forward KL")
        if s.topk is not None:
            raise ValueError("dkd needs the teacher's full logits (its non-target term spans "
                             "every class); topk must be None")

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        s = self.setup
        return dkd_term_loss(step.logits, step.labels, step.teacher, temperature=s.temperature,
                             soft_weight=s.soft_weight, hard_weight=s.hard_weight,
                             alpha=self.options["dkd_alpha"], beta=self.options["dkd_beta"],
                             threshold=s.threshold, ignore_index=s.ignore_index)
