"""The teacher as a distilled student sees it.

One module (:class:`TeacherView`) defines what the teacher contributes for a batch, so the
online path (run every step) and the offline path (run once into a FeatureCache) cannot
drift apart: inputs resized to the teacher's size, then its logits, or its top-k logits
and their class indices packed into one float32 row that a FeatureCache stores as is.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["TeacherView", "unpack", "MAX_TOPK_CLASSES"]

# Class indices ride in float32 next to the values; float32 holds integers exactly to 2**24.
MAX_TOPK_CLASSES = 2 ** 24


class TeacherView(nn.Module):
    """``teacher`` on inputs resized (bilinear) to ``input_size``; output ``[B, V]``
    logits, or with ``topk`` = K a float32 ``[B, 2K]`` row: the K largest logits (sorted,
    largest first), then their class indices."""

    def __init__(self, teacher: nn.Module, *, input_size: tuple[int, int] | None = None,
                 topk: int | None = None):
        super().__init__()
        self.teacher, self.input_size, self.topk = teacher, input_size, topk

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return self.teacher(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(x)
        if self.topk is None:
            return logits
        V = logits.shape[-1]
        if self.topk > V:
            raise ValueError(f"topk={self.topk} is more than the teacher's {V} classes")
        if V > MAX_TOPK_CLASSES:
            raise ValueError(f"topk caching stores class indices as float32, exact up to "
                             f"{MAX_TOPK_CLASSES} classes; the teacher has {V}")
        values, indices = logits.float().topk(self.topk, dim=-1)
        return torch.cat([values, indices.float()], dim=-1)

    def extra_repr(self) -> str:  # part of the FeatureCache fingerprint
        return f"input_size={self.input_size}, topk={self.topk}"


def unpack(rows: torch.Tensor, topk: int | None) -> tuple[torch.Tensor, ...]:
    """TeacherView output → ``(logits,)`` or ``(values [B, K], indices [B, K] int64)``."""
    if topk is None:
        return (rows,)
    return rows[:, :topk], rows[:, topk:].long()
