"""ptcore.kd_loss: the fused temperature-softmax knowledge-distillation loss."""
from __future__ import annotations

import torch

from ptcore import _kd_args, reference
from ptcore._extension import has_native
from ptcore.ops import _row_loss
from ptcore.ops._row_signals import RowSignals, from_stats

__all__ = ["kd_loss"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
            temperature: float = 1.0, reduction: str = "batchmean",
            divergence: str = "forward_kl", beta: float = 0.5,
            labels: torch.Tensor | None = None, hard_weight: float = 0.0,
            soft_weight: float = 1.0, ignore_index: int = -100,
            scale_by_t2: bool = True, return_row_signals: bool = False):
    r"""Distillation loss between student and teacher logits, fused in one native kernel.

    Shapes: ``student_logits``, ``teacher_logits`` ``[..., V]`` (same shape, dtype, device;
    leading dims are rows), ``labels`` ``[...]`` int. With :math:`p_s=\mathrm{softmax}(s/T)`,
    :math:`p_t=\mathrm{softmax}(t/T)`, each row's loss is

    .. math::
        \ell = w_{soft}\,(T^2)\,D(p_t, p_s) + w_{hard}\,\mathrm{CE}(\mathrm{softmax}(s), y)

    where ``divergence`` picks :math:`D`: ``"forward_kl"`` :math:`KL(p_t\|p_s)` (Hinton),
    ``"reverse_kl"`` :math:`KL(p_s\|p_t)`, ``"jsd"`` :math:`\beta KL(p_t\|m)+(1-\beta)KL(p_s\|m)`,
    :math:`m=\beta p_t+(1-\beta)p_s`. The :math:`T^2` factor applies when ``scale_by_t2``; the
    hard term (at T = 1) only when ``labels`` are given. Rows labelled ``ignore_index`` count for
    nothing and get no gradient.

    ``reduction``: ``"none"`` (shape ``[...]``), ``"sum"``, ``"batchmean"`` (sum / counted rows),
    ``"mean"`` (sum / (counted rows · V)). The loss is float32 (float64 for float64 inputs);
    the student's gradient has the student's dtype; the teacher gets no gradient.
    ``-inf`` logits (masked classes) are allowed: 0·log 0 = 0.

    With ``return_row_signals=True`` returns ``(loss, RowSignals)``: each row's teacher and
    student top probability at T and its divergence, read from the statistics the kernel
    keeps for the backward (no extra pass; the reference computes them when the native
    library is missing).
    """
    _kd_args.check_hyper(temperature, reduction, divergence, beta, hard_weight, soft_weight,
                         ignore_index)
    s, t, lab, lead = _kd_args.flatten(student_logits, teacher_logits, labels)
    args = (float(temperature), divergence, float(beta), float(hard_weight), float(soft_weight),
            int(ignore_index), bool(scale_by_t2))
    if has_native():
        grad_scale, compute_grad = _row_loss.forward_args(s, lab, ignore_index, reduction)
        rows, stats, _ = torch.ops.ptcore.kd_loss_rows(s, t.detach(), lab, *args, grad_scale,
                                                       compute_grad)
        signals = return_row_signals and from_stats(stats, lead)
    else:
        rows = reference.kd_loss_rows(s, t, lab, *args)
        signals = return_row_signals and RowSignals(*(x.reshape(lead) for x in (
            reference.kd_row_signals(s, t, args[0], divergence, args[2]))))
    loss = _kd_args.reduce_rows(rows, lab, ignore_index, reduction, s.shape[-1], lead)
    return (loss, signals) if return_row_signals else loss


if has_native():
    _row_loss.register("kd_loss_rows", n_tensors=3)
