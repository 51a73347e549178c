"""The feature term "at": attention transfer (Zagoruyko & Komodakis 2017). The normalised
spatial map of squared activations, averaged over channels, matched in L2; channel counts
may differ (no adapter)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ptcore.strategies.distill.layers import FeatureTerm
from ptcore.strategies.distill.terms import register

__all__ = ["AT", "attention"]


def attention(f: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` → the normalised attention map ``[N, H·W]``."""
    return F.normalize(f.float().pow(2).mean(1).flatten(1), dim=1)


@register
class AT(FeatureTerm):
    name = "at"
    help = "attention transfer between the --features layers"

    @staticmethod
    def per_row(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The squared L2 distance of the two normalised attention maps."""
        if student.dim() != 4 or teacher.dim() != 4:
            raise ValueError("attention transfer needs [N, C, H, W] feature maps on both "
                             f"sides, got {list(student.shape)} and {list(teacher.shape)}")
        return (attention(student) - attention(teacher)).pow(2).sum(1)
