"""The logit term "dist": DIST (Huang et al. 2022, "Knowledge Distillation from A Stronger
Teacher"). Instead of matching the teacher's probabilities exactly (KL), the student matches
their relations: the Pearson correlation of student and teacher probabilities over the
classes of each sample (inter-class) and over the samples of each class in the batch
(intra-class), each as 1 − correlation, weighted by ``dist_beta`` and ``dist_gamma`` and by
T² at the temperature T; plus the labels' cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ptcore._kd_args import check_float
from ptcore.strategies.distill.terms import Option, Step, Term, register

__all__ = ["DIST", "dist_loss"]


def _pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The correlation of each row of ``a`` with the same row of ``b`` [n, m] -> [n]."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0,
              beta: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """:math:`T^2(\\beta(1 - \\overline{\\rho}_{rows}) + \\gamma(1 - \\overline{\\rho}_{cols}))` of
    the probabilities :math:`\\mathrm{softmax}(z/T)` of logits ``[n, V]`` (at least float32)."""
    dtype = torch.promote_types(student.dtype, torch.float32)
    p_s = F.softmax(student.to(dtype) / temperature, dim=1)
    p_t = F.softmax(teacher.to(dtype) / temperature, dim=1)
    inter = 1 - _pearson(p_s, p_t).mean()
    intra = 1 - _pearson(p_s.t(), p_t.t()).mean()
    return temperature ** 2 * (beta * inter + gamma * intra)


def _nonneg(value, name: str) -> float:
    return check_float(value, name, nonneg=True)


@register
class DIST(Term):
    name, kind = "dist", "logits"
    help = ("Pearson correlation of probabilities, inter- and intra-class, weights dist_beta "
            "and dist_gamma")
    options = {"dist_beta": Option(1.0, _nonneg), "dist_gamma": Option(1.0, _nonneg)}

    def check(self) -> None:
        s = self.setup
        if s.topk is not None or s.divergence != "forward_kl":
            raise ValueError("dist correlates the teacher's full probabilities: topk must be "
                             "None and divergence 'forward_kl'")
        if s.threshold is not None:
            raise ValueError("dist's intra-class term correlates a whole batch, so no row can be "
                             "left out by threshold: threshold must be None")

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        s = self.setup
        soft = dist_loss(step.logits, step.teacher[0], temperature=s.temperature,
                         beta=self.options["dist_beta"], gamma=self.options["dist_gamma"])
        labelled = step.labels != s.ignore_index
        hard = F.cross_entropy(step.logits[labelled].float(), step.labels[labelled]) \
            if labelled.any() else soft * 0.0
        return {"loss": s.soft_weight * soft + s.hard_weight * hard,
                "pseudo": (~labelled).float().mean()}
