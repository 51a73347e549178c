"""FusedLinearKDLoss: the module form of ptcore.fused_linear_kd_loss."""
from __future__ import annotations

import torch

from ptcore import _kd_args
from ptcore.ops.fused_linear_kd import fused_linear_kd_loss


class FusedLinearKDLoss(torch.nn.Module):
    """``FusedLinearKDLoss(**options)(student_hidden, student_weight, student_bias=None,
    labels=None, **teacher)`` == ``ptcore.fused_linear_kd_loss(student_hidden,
    student_weight, student_bias, labels=labels, **teacher, **options)``, where ``teacher``
    is ``teacher_hidden=..., teacher_weight=...[, teacher_bias=...]``,
    ``teacher_values=..., teacher_indices=...`` or ``teacher_probs=...`` (and
    ``return_row_signals``/``return_parts`` per call). The module holds no weights: pass the
    student's ``lm_head.weight`` (it gets the gradient). Options are checked when built."""

    def __init__(self, *, temperature: float = 1.0, reduction: str = "batchmean",
                 divergence: str = "forward_kl", beta: float = 0.5, hard_weight: float = 0.0,
                 soft_weight: float = 1.0, ignore_index: int = -100, scale_by_t2: bool = True,
                 tail_bucket: bool = False, chunk_size: int | None = None,
                 fp32_weight_grad: bool = True, vocab_size: int | None = None,
                 fp32_logits: bool = False):
        super().__init__()
        _kd_args.check_hyper(temperature, reduction,
                             "forward_kl" if divergence == "cosine" else divergence, beta,
                             hard_weight, soft_weight, ignore_index)
        for name, flag in (("tail_bucket", tail_bucket), ("fp32_weight_grad", fp32_weight_grad),
                           ("fp32_logits", fp32_logits)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if chunk_size is not None and (isinstance(chunk_size, bool)
                                       or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self.options = dict(temperature=float(temperature), reduction=reduction,
                            divergence=divergence, beta=float(beta),
                            hard_weight=float(hard_weight), soft_weight=float(soft_weight),
                            ignore_index=ignore_index, scale_by_t2=bool(scale_by_t2),
                            tail_bucket=tail_bucket, chunk_size=chunk_size,
                            fp32_weight_grad=fp32_weight_grad, vocab_size=vocab_size,
                            fp32_logits=fp32_logits)

    def forward(self, student_hidden: torch.Tensor, student_weight: torch.Tensor,
                student_bias: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **teacher) -> torch.Tensor:
        return fused_linear_kd_loss(student_hidden, student_weight, student_bias, labels=labels,
                                    **teacher, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
