"""An exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``):
after each optimizer step ``ema = decay·ema + (1 − decay)·weights`` (the first step copies
the weights), over parameters and buffers (BatchNorm statistics), so the averaged copy is
evaluated as it stands. Often a better final model than the last weights for a few percent
more memory; decay 0.999 averages over about the last 1,000 steps."""
from __future__ import annotations

import math

import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["check_ema", "make_ema"]


def check_ema(decay) -> None:
    if decay is None:
        return
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) \
            or not 0 < decay < 1 or not math.isfinite(decay):
        raise ValueError(f"ema must be null or a decay in (0, 1) (e.g. 0.999), got {decay!r}")


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """The averaged copy of ``model`` (on its device), updated by
    ``.update_parameters(model)``."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
