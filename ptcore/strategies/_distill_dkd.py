"""Decoupled knowledge distillation (DKD, Zhao et al. 2022) on logits, built from the fused
``ptcore.kd_loss``: the target-class term (TCKD) is a KL between two-class distributions
and the non-target term (NCKD) a KL over the other classes, which is kd_loss with the
target class masked to -inf (the op's masked-vocabulary case)."""
from __future__ import annotations

import torch

from ptcore.ops import kd_loss

__all__ = ["dkd_loss"]


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
