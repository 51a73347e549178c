"""KDLoss: the module form of ptcore.kd_loss."""
from __future__ import annotations

import torch

from ptcore import _kd_args
from ptcore.ops.kd_loss import kd_loss


class KDLoss(torch.nn.Module):
    """``KDLoss(**options)(student_logits, teacher_logits, labels=None)`` ==
    ``ptcore.kd_loss(student_logits, teacher_logits, labels=labels, **options)``.

    Options are checked when the module is built, so a bad setting fails before training.
    """

    def __init__(self, *, temperature: float = 1.0, reduction: str = "batchmean",
                 divergence: str = "forward_kl", beta: float = 0.5, hard_weight: float = 0.0,
                 soft_weight: float = 1.0, ignore_index: int = -100, scale_by_t2: bool = True):
        super().__init__()
        _kd_args.check_hyper(temperature, reduction, divergence, beta, hard_weight, soft_weight,
                             ignore_index)
        self.options = dict(temperature=float(temperature), reduction=reduction,
                            divergence=divergence, beta=float(beta),
                            hard_weight=float(hard_weight), soft_weight=float(soft_weight),
                            ignore_index=ignore_index, scale_by_t2=bool(scale_by_t2))

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        return kd_loss(student_logits, teacher_logits, labels=labels, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
