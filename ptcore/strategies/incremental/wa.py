"""Weight Aligning (WA, Zhao et al. 2020): after a task is trained, rescale the new classes'
rows of the head to the old rows' mean norm, removing the head's bias toward the newest
classes."""
from __future__ import annotations

import torch
import torch.nn as nn

from ptcore.models import get_heads
from ptcore.strategies.incremental.registry import Method, register

__all__ = ["weight_align", "WA"]


@torch.no_grad()
def weight_align(head: nn.Linear, n_old: int, stop: int) -> float:
    """Scale rows ``[n_old, stop)`` of ``head`` so that their mean weight norm equals that of
    rows ``[0, n_old)``; returns the factor γ. The bias of those rows is scaled too, so the
    new classes' logits are exactly γ times what they were (WA's aim) whatever the bias."""
    if not 0 < n_old < stop <= head.out_features:
        raise ValueError(f"need 0 < n_old < stop <= {head.out_features} rows, got "
                         f"n_old={n_old}, stop={stop}")
    norms = head.weight.float().norm(dim=1)
    gamma = float(norms[:n_old].mean() / norms[n_old:stop].mean())
    head.weight[n_old:stop] *= gamma
    if head.bias is not None:
        head.bias[n_old:stop] *= gamma
    return gamma


@register
class WA(Method):
    name = "wa"
    help = "after each task, scale the new classes' head rows to the old rows' mean norm"

    def after_training(self, run, t, train):
        start, stop = run.plan.spans[t]
        if not start or (t == 0 and run.plan.skip_first):  # no older classes
            return
        for head in get_heads(run.model):  # each classifier of a distilled ViT
            weight_align(head, start, stop)
