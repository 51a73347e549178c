"""ptcore.kd_loss_topk: distillation from a teacher stored as its top-K logits or
log-probabilities, optionally with the mass they leave as one more bin."""
from __future__ import annotations

import torch

from ptcore import _kd_args, reference
from ptcore._extension import has_native
from ptcore.ops import _row_loss
from ptcore.ops._row_signals import RowSignals, from_stats

__all__ = ["kd_loss_topk"]


def kd_loss_topk(student_logits: torch.Tensor, teacher_values: torch.Tensor,
                 teacher_indices: torch.Tensor, *, temperature: float = 1.0,
                 reduction: str = "batchmean", labels: torch.Tensor | None = None,
                 hard_weight: float = 0.0, soft_weight: float = 1.0, ignore_index: int = -100,
                 scale_by_t2: bool = True, tail_bucket: bool = False,
                 return_row_signals: bool = False):
    r"""Forward-KL distillation against a teacher kept as K logits or log-probabilities per row.

    Shapes: ``student_logits`` ``[..., V]``; ``teacher_values`` (any float dtype) and
    ``teacher_indices`` (int64, distinct classes in ``[0, V)``) ``[..., K]`` with K ≤ V, e.g.
    from ``teacher_logits.topk(K)``. The teacher's distribution is
    :math:`q=\mathrm{softmax}(values/T)` over its K classes (renormalised), the student's
    :math:`p_s=\mathrm{softmax}(s/T)` over all V; each row's loss is

    .. math::
        \ell = w_{soft}\,(T^2)\sum_k q_k\,(\log q_k - \log p_s[i_k]) + w_{hard}\,\mathrm{CE}(s, y)

    Logits and log-probabilities give the same loss (a constant added to a row's values
    cancels in the renormalised softmax). With ``tail_bucket=True`` the values must be the
    teacher's log-probabilities at T = 1 (``log_softmax(teacher_logits).topk(K)``, what
    inference servers return): the mass they leave, :math:`\tau = 1-\sum_k e^{v_k}`, is one
    more bin, so a small K is not renormalised into an over-confident target. The teacher's
    K + 1 bins :math:`(v_k, \log\tau)` are tempered together, and the student's bin is
    its remaining mass :math:`1-\sum_k p_s[i_k]`; the loss adds
    :math:`q_{tail}(\log q_{tail}-\log p_{tail})`. A row whose values hold all the mass
    (or more: logits) has an empty tail and gets the renormalised loss.

    Everything else (reductions, labels, ``ignore_index``, dtypes, gradients) is as in
    :func:`ptcore.kd_loss`, ``return_row_signals`` included (the teacher's confidence is
    its top probability over its K bins, K + 1 with the tail). Storing K values + K indices
    instead of V logits is what makes offline distillation practical for large label
    spaces.
    """
    _kd_args.check_hyper(temperature, reduction, "forward_kl", 0.5, hard_weight, soft_weight,
                         ignore_index)
    s, v, i, lab, lead = _kd_args.flatten_topk(student_logits, teacher_values, teacher_indices,
                                               labels)
    if not isinstance(tail_bucket, bool):
        raise TypeError(f"tail_bucket must be a bool, got {type(tail_bucket).__name__}")
    args = (float(temperature), float(hard_weight), float(soft_weight), int(ignore_index),
            bool(scale_by_t2), tail_bucket)
    if has_native():
        grad_scale, compute_grad = _row_loss.forward_args(s, lab, ignore_index, reduction)
        rows, stats, _ = torch.ops.ptcore.kd_loss_topk_rows(s, v.detach(), i, lab, *args,
                                                            grad_scale, compute_grad)
        signals = return_row_signals and from_stats(stats, lead)
    else:
        rows = reference.kd_loss_topk_rows(s, v, i, lab, *args)
        signals = return_row_signals and RowSignals(*(x.reshape(lead) for x in (
            reference.kd_topk_row_signals(s, v, i, args[0], tail_bucket))))
    loss = _kd_args.reduce_rows(rows, lab, ignore_index, reduction, s.shape[-1], lead)
    return (loss, signals) if return_row_signals else loss


if has_native():
    _row_loss.register("kd_loss_topk_rows", n_tensors=4)
