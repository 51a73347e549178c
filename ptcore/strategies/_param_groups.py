"""Optimizer parameter groups: one learning rate per layer group (block), decaying towards
the input (discriminative learning rates), and weight decay only where timm's convention
puts it.

No weight decay, for every model (torchvision's and timm's alike, and a distilled student):
1-D parameters (norm scales and shifts, biases: timm's ``weight_decay_exclude_1d``) and the
tensors a model lists as not to decay — a timm model's ``no_weight_decay()`` names
(``cls_token``, ``pos_embed``, ``dist_token``, relative position tables; matched with
``fnmatch`` as timm matches them) — and the same kinds in torchvision's models
(:data:`TORCHVISION_NO_DECAY`), which list none.

The layer groups stay ptcore's own rather than ``timm.optim.param_groups_layer_decay``
for timm models, for two reasons. (1) timm gives each group an ``lr_scale`` that only
timm's schedulers apply; torch.optim and the engine's schedules ignore it, so its
groups would train every layer at the base rate. (2) Its layers are
``group_matcher(coarse=False)`` ids (each ConvNeXt block: 14 layers for convnext_atto)
while ptcore's layer groups are :func:`ptcore.models.blocks` (7 for convnext_atto): stage
ranges from ``group_matcher(coarse=True)`` that gradual unfreezing and the feature cache
also cut at, built by one rule for torchvision and timm models. What is timm's is reused:
its group matcher and its no-decay lists.
"""
from __future__ import annotations

import fnmatch

import torch.nn as nn

from ptcore.models.stages import StagedModel, blocks, stages

__all__ = ["TORCHVISION_NO_DECAY", "layer_decay_groups", "weight_decay_groups"]

# torchvision's tensors of the kinds timm's models list in no_weight_decay(): ViT's class
# token and position embedding, Swin's and MaxViT's relative position bias tables, Swin V2's
# attention logit scale.
TORCHVISION_NO_DECAY = ("*class_token", "*pos_embedding", "*relative_position_bias_table",
                        "*logit_scale")


def _no_decay_test(model: nn.Module):
    """name, parameter -> whether it goes without weight decay, for ``model``."""
    inner = model.model if isinstance(model, StagedModel) else model
    listed = getattr(inner, "no_weight_decay", None)
    patterns = TORCHVISION_NO_DECAY + (tuple(listed()) if callable(listed) else ())
    return lambda name, p: p.ndim <= 1 or any(fnmatch.fnmatchcase(name, pat)
                                              for pat in patterns)


def _check_weight_decay(weight_decay: float) -> None:
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")


def _split(params: list, names: dict, no_decay, weight_decay: float, **group) -> list[dict]:
    """The decayed and the undecayed ones of ``params`` as (up to) two groups."""
    out = []
    for decay in (True, False):
        chosen = [p for p in params if no_decay(names[id(p)], p) != decay]
        if chosen:
            out.append({"params": chosen, **group,
                        "weight_decay": weight_decay if decay else 0.0})
    return out


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Every parameter of any ``model`` in two groups: with ``weight_decay`` and without
    (the rule above); no layer structure needed (a distilled student)."""
    _check_weight_decay(weight_decay)
    names = {id(p): n for n, p in model.named_parameters()}
    return _split(list(model.parameters()), names, _no_decay_test(model), weight_decay)


def layer_decay_groups(model: nn.Module, lr: float, layer_decay: float,
                       weight_decay: float) -> list[dict]:
    """Groups for every parameter of ``model``: block b of B gets
    ``lr * layer_decay ** (B - 1 - b)`` (the head gets ``lr``). Each group records its
    ``block`` index and the stage names it covers, for inspection."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    _check_weight_decay(weight_decay)
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay!r}")
    st = stages(model)
    bl = blocks(model)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = _no_decay_test(model)
    seen: set[int] = set()
    groups = []
    for b, (start, stop) in enumerate(bl):
        params = [p for s in st[start:stop] for p in s.module.parameters()
                  if id(p) not in seen and not seen.add(id(p))]
        groups += _split(params, names, no_decay, weight_decay,
                         lr=lr * layer_decay ** (len(bl) - 1 - b), block=b,
                         stages=[s.name for s in st[start:stop]])
    return groups
