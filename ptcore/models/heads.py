"""The classifier head of a model: find it, replace it, grow it. The head is the Linear
(or SqueezeNet's 1×1 convolution) that produces the logits, inside the model's last stage."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["head_path", "get_head", "head_width", "replace_head", "expand_head"]


def head_path(model: nn.Module) -> str:
    """Dotted path of the final nn.Linear (or 1×1 nn.Conv2d) that produces the logits."""
    from ptcore.models._trace import HEAD_TYPES
    from ptcore.models.stages import StagedModel, stages

    if isinstance(model, StagedModel):
        model = model.model
    last = stages(model)[-1]
    found = [n for n, m in model.named_modules()
             if (n == last.name or n.startswith(last.name + ".")) and isinstance(m, HEAD_TYPES)]
    if not found:
        raise TypeError(f"the last stage {last.name!r} of {type(model).__name__} holds no "
                        "Linear or Conv2d head")
    return found[-1]


def get_head(model: nn.Module) -> nn.Module:
    return model.get_submodule(head_path(model))


def _set_head(model: nn.Module, head: nn.Linear) -> None:
    parent, _, leaf = head_path(model).rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, head)


def _new_linear(old: nn.Module, out_features: int) -> nn.Module:
    like = dict(bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)
    if isinstance(old, nn.Conv2d):
        return nn.Conv2d(old.in_channels, out_features, old.kernel_size, old.stride,
                         old.padding, **like)
    return nn.Linear(old.in_features, out_features, **like)


def head_width(head: nn.Module) -> int:
    return head.out_channels if isinstance(head, nn.Conv2d) else head.out_features


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Put a freshly initialised head with ``num_classes`` outputs (same device and dtype)."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    old = get_head(model)
    if head_width(old) != num_classes:
        _set_head(model, _new_linear(old, num_classes))
    return model


def expand_head(model: nn.Module, new_classes: int) -> nn.Module:
    """Add ``new_classes`` outputs to the head, keeping the old classes' rows exactly
    (class-incremental learning)."""
    if not isinstance(new_classes, int) or new_classes < 1:
        raise ValueError(f"new_classes must be a positive int, got {new_classes!r}")
    old = get_head(model)
    n = head_width(old)
    new = _new_linear(old, n + new_classes)
    with torch.no_grad():
        new.weight[:n] = old.weight
        if old.bias is not None:
            new.bias[:n] = old.bias
    new.weight.requires_grad_(old.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    _set_head(model, new)
    return model
