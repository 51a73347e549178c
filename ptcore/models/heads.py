"""The classifier head of a registered model: find it, replace it, grow it."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["head_path", "get_head", "replace_head", "expand_head"]


def head_path(model: nn.Module) -> str:
    """Dotted path of the final nn.Linear that produces the logits."""
    from ptcore.models.stages import stages

    return stages(model)[-1].name


def get_head(model: nn.Module) -> nn.Linear:
    return model.get_submodule(head_path(model))


def _set_head(model: nn.Module, head: nn.Linear) -> None:
    parent, _, leaf = head_path(model).rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, head)


def _new_linear(old: nn.Linear, out_features: int) -> nn.Linear:
    return nn.Linear(old.in_features, out_features, bias=old.bias is not None,
                     device=old.weight.device, dtype=old.weight.dtype)


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Put a freshly initialised head with ``num_classes`` outputs (same device and dtype)."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    old = get_head(model)
    if old.out_features != num_classes:
        _set_head(model, _new_linear(old, num_classes))
    return model


def expand_head(model: nn.Module, new_classes: int) -> nn.Module:
    """Add ``new_classes`` outputs to the head, keeping the old classes' rows exactly
    (class-incremental learning)."""
    if not isinstance(new_classes, int) or new_classes < 1:
        raise ValueError(f"new_classes must be a positive int, got {new_classes!r}")
    old = get_head(model)
    new = _new_linear(old, old.out_features + new_classes)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        if old.bias is not None:
            new.bias[: old.out_features] = old.bias
    new.weight.requires_grad_(old.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    _set_head(model, new)
    return model
