"""The logit term "kd" (Hinton et al. 2015): the student matches the teacher's
temperature-softened outputs through the fused ``ptcore.kd_loss`` (full logits; forward KL,
reverse KL or JSD) or ``ptcore.kd_loss_topk`` (the teacher's top-k), plus the labels'
cross-entropy. The default logit term of every method."""
from __future__ import annotations

import torch

import ptcore
from ptcore.strategies.distill.terms import Step, Term, register

__all__ = ["KD", "kd_term_loss"]


def _kd(student: torch.Tensor, teacher: tuple[torch.Tensor, ...], **kw):
    values = teacher[0].to(student.dtype)
    if len(teacher) == 1:
        return ptcore.kd_loss(student, values, **kw)
    return ptcore.kd_loss_topk(student, values, teacher[1], **kw)


def kd_term_loss(student_logits: torch.Tensor, labels: torch.Tensor,
                 teacher: tuple[torch.Tensor, ...], *, temperature: float, soft_weight: float,
                 hard_weight: float, threshold: float | None = None,
                 ignore_index: int = -100, divergence: str = "forward_kl",
                 beta: float = 0.5) -> dict:
    r"""Mean over the rows that count of

    .. math::
        w_{soft}\,T^2\,KL(p_t\|p_s) + w_{hard}\,\mathrm{CE}(s, y)\,[y \ne \text{ignore}]

    with :math:`p = \mathrm{softmax}(\cdot/T)` (the teacher's over its K kept classes
    when ``teacher`` is top-k). ``divergence``/``beta`` replace the forward KL as in
    :func:`ptcore.kd_loss` (full logits only). Labelled rows always count; unlabelled rows
    (label ``ignore_index``) count when the teacher's confidence, its top probability
    :math:`\max p_t` at the distillation temperature T (the target these rows learn from),
    is at least ``threshold``. The confidence comes with the loss itself (the kernel's row
    statistics), so no other pass over the teacher's logits runs; the unlabelled rows'
    losses are computed per row and the others masked out, which gives them no gradient.
    Returns ``{"loss", "pseudo"}`` (pseudo: the share of the batch's rows that learn from
    the teacher alone)."""
    labelled = labels != ignore_index
    unlabelled = ~labelled
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


@register
class KD(Term):
    name, kind = "kd", "logits"
    help = "Hinton's KD, with --divergence"

    def check(self) -> None:
        s = self.setup
        if s.divergence != "forward_kl" and s.topk is not None:
            raise ValueError(f"divergence={s.divergence!r} needs full logits: top-k distils "
                             "with the forward KL")

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        s = self.setup
        return kd_term_loss(step.logits, step.labels, step.teacher, temperature=s.temperature,
                            soft_weight=s.soft_weight, hard_weight=s.hard_weight,
                            threshold=s.threshold, ignore_index=s.ignore_index,
                            divergence=s.divergence, beta=s.beta)
