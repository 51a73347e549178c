"""Optimizer parameter groups for fine-tuning: one learning rate per layer group (block),
decaying towards the input (discriminative learning rates), and no weight decay on
biases, norm parameters and ViT token/position embeddings."""
from __future__ import annotations

import torch.nn as nn

from ptcore.models.stages import blocks, stages

__all__ = ["layer_decay_groups"]

_NO_DECAY_NAMES = ("class_token", "pos_embedding")


def _no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(_NO_DECAY_NAMES)


def layer_decay_groups(model: nn.Module, lr: float, layer_decay: float,
                       weight_decay: float) -> list[dict]:
    """Groups for every parameter of ``model``: block b of B gets
    ``lr * layer_decay ** (B - 1 - b)`` (the head gets ``lr``). Each group records its
    ``block`` index and the stage names it covers, for inspection."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    st = stages(model)
    bl = blocks(model)
    names = {id(p): n for n, p in model.named_parameters()}
    seen: set[int] = set()
    groups = []
    for b, (start, stop) in enumerate(bl):
        params = [p for s in st[start:stop] for p in s.module.parameters()
                  if id(p) not in seen and not seen.add(id(p))]
        for decay in (True, False):
            chosen = [p for p in params if _no_decay(names[id(p)], p) != decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr * layer_decay ** (len(bl) - 1 - b),
                               "weight_decay": weight_decay if decay else 0.0, "block": b,
                               "stages": [s.name for s in st[start:stop]]})
    return groups
