"""The classifier head of a model: find it, replace it, grow it. The head is the Linear
(or SqueezeNet's 1×1 convolution) that produces the logits, inside the model's last stage.
A model that averages several classifiers (timm's distilled DeiT, LeViT, EfficientFormer:
``head`` and ``head_dist``) has one such Linear in each; they are replaced and grown
together, and :func:`get_head` is the first (``head``)."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["head_path", "head_paths", "get_head", "get_heads", "head_width", "replace_head",
           "expand_head"]


def head_paths(model: nn.Module) -> list[str]:
    """Dotted paths of the final nn.Linear (or 1×1 nn.Conv2d) that produces the logits, one
    per classifier of a model with several."""
    from ptcore.models._trace import HEAD_TYPES, classifier_paths
    from ptcore.models.stages import StagedModel, stages

    if isinstance(model, StagedModel):
        model = model.model
    last = stages(model)[-1]
    owners = classifier_paths(model) or [last.name]
    paths = []
    for owner in owners:
        found = [n for n, m in model.named_modules()
                 if (n == owner or n.startswith(owner + ".")) and isinstance(m, HEAD_TYPES)]
        if not found:
            raise TypeError(f"the last stage {owner!r} of {type(model).__name__} holds no "
                            "Linear or Conv2d head")
        paths.append(found[-1])
    return paths


def head_path(model: nn.Module) -> str:
    """Dotted path of the final nn.Linear (or 1×1 nn.Conv2d) that produces the logits (the
    first classifier's, for a model with several)."""
    return head_paths(model)[0]


def get_head(model: nn.Module) -> nn.Module:
    return model.get_submodule(head_path(model))


def get_heads(model: nn.Module) -> list[nn.Module]:
    return [model.get_submodule(p) for p in head_paths(model)]


def _set_head(model: nn.Module, path: str, head: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
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
    for path in head_paths(model):
        old = model.get_submodule(path)
        if head_width(old) != num_classes:
            _set_head(model, path, _new_linear(old, num_classes))
    return model


def expand_head(model: nn.Module, new_classes: int) -> nn.Module:
    """Add ``new_classes`` outputs to the head, keeping the old classes' rows exactly
    (class-incremental learning)."""
    if not isinstance(new_classes, int) or new_classes < 1:
        raise ValueError(f"new_classes must be a positive int, got {new_classes!r}")
    for path in head_paths(model):
        old = model.get_submodule(path)
        n = head_width(old)
        new = _new_linear(old, n + new_classes)
        with torch.no_grad():
            new.weight[:n] = old.weight
            if old.bias is not None:
                new.bias[:n] = old.bias
        new.weight.requires_grad_(old.weight.requires_grad)
        if new.bias is not None:
            new.bias.requires_grad_(old.bias.requires_grad)
        _set_head(model, path, new)
    return model
