"""The feature term "rkd": relational knowledge distillation (Park et al. 2019). The student's
embeddings (each tapped layer's output, flattened) keep the teacher's relations between
the samples of a batch rather than its values: the pairwise distances, each divided by
their mean (``rkd_distance``), and the angles that every three samples form
(``rkd_angle``), both matched by the Huber (smooth L1) loss. Dimensions may differ (no
adapter). Both come from the batch's Gram matrix after centring it (relations do not move
with a common shift), so the angles cost n³ rather than n²·d memory."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ptcore._kd_args import check_float
from ptcore.strategies.distill.layers import FeatureTerm
from ptcore.strategies.distill.terms import Option, Step, register

__all__ = ["RKD", "relations", "rkd_loss"]


def relations(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances [n, n] over their mean off the diagonal, cos of the angle at i between
    j and k [n, n, n], 0 where j or k is i) of embeddings ``e`` [n, ...]."""
    e = e.flatten(1)
    e = e.to(torch.promote_types(e.dtype, torch.float32))
    e = e - e.mean(0)
    gram = e @ e.t()
    sq = gram.diagonal()
    d2 = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(0)
    off = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    dist = torch.where(off, d2.clamp_min(1e-12).sqrt(), 0.0)
    # <e_j - e_i, e_k - e_i> = G_jk - G_ij - G_ik + G_ii
    inner = gram[None] - gram[:, :, None] - gram[:, None, :] + sq[:, None, None]
    both = off[:, :, None] & off[:, None, :]
    norm = dist[:, :, None] * dist[:, None, :]
    cos = torch.where(both, inner / norm.clamp_min(1e-12), 0.0)
    return dist / dist[off].mean().clamp_min(1e-12), cos


def rkd_loss(student: torch.Tensor, teacher: torch.Tensor, *, distance: float = 25.0,
             angle: float = 50.0) -> torch.Tensor:
    """``distance`` × Huber(student's distances, teacher's) + ``angle`` × Huber(angles),
    each a mean over its entries; the teacher's relations carry no gradient."""
    d_s, a_s = relations(student)
    with torch.no_grad():
        d_t, a_t = relations(teacher)
    return distance * F.smooth_l1_loss(d_s, d_t) + angle * F.smooth_l1_loss(a_s, a_t)


def _nonneg(value, name: str) -> float:
    return check_float(value, name, nonneg=True)


@register
class RKD(FeatureTerm):
    name = "rkd"
    help = ("distance and angle relations between the samples, at the --features layers "
            "(rkd_distance, rkd_angle)")
    options = {**FeatureTerm.options, "rkd_distance": Option(25.0, _nonneg),
               "rkd_angle": Option(50.0, _nonneg)}

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        rel = sum(rkd_loss(s, t, distance=self.options["rkd_distance"],
                           angle=self.options["rkd_angle"])
                  for s, t in zip(step.student_features, step.teacher_features))
        rel = rel / len(step.student_features)
        return {"loss": self.options["feature_weight"] * rel, "feature": rel.detach()}
