"""The feature term "fitnets": hints (Romero et al. 2015). A learned adapter maps each
student layer's output onto its teacher layer's, matched in mean squared error."""
from __future__ import annotations

import torch
import torch.nn as nn

from ptcore.strategies.distill.layers import FeatureTerm
from ptcore.strategies.distill.terms import register

__all__ = ["FitNets"]


@register
class FitNets(FeatureTerm):
    name = "fitnets"
    help = "hints through a learned adapter, between the --features layers"

    def adapter(self, student: torch.Tensor, teacher: torch.Tensor) -> nn.Module:
        """A 1×1 convolution (a linear map for flat features) where the channel counts
        differ, else none."""
        if student.dim() != teacher.dim() or student.dim() not in (2, 4):
            raise ValueError(f"features: cannot map a student feature of shape "
                             f"{list(student.shape[1:])} onto a teacher feature of shape "
                             f"{list(teacher.shape[1:])}; pair [N, C] with [N, C] or "
                             "[N, C, H, W] with [N, C, H, W]")
        if student.shape[1] == teacher.shape[1]:
            return nn.Identity()
        if student.dim() == 2:
            return nn.Linear(student.shape[1], teacher.shape[1])
        return nn.Conv2d(student.shape[1], teacher.shape[1], 1)

    @staticmethod
    def per_row(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The squared error per element, averaged over the feature."""
        return (student.float() - teacher).pow(2).flatten(1).mean(1)
