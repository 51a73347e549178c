"""Which torchvision classification models ptcore knows, and how to build one."""
from __future__ import annotations

import torch.nn as nn

__all__ = ["MODELS", "list_models", "create_model"]

# Every family here is one that stages.py knows how to cut into stages.
MODELS: tuple[str, ...] = (
    "resnet18", "resnet34", "resnet50", "alexnet",
    "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "mobilenet_v3_small", "efficientnet_b0", "vit_b_16",
)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODELS)


def create_model(name: str, *, num_classes: int | None = None, weights=None,
                 progress: bool = True, **kwargs) -> nn.Module:
    """Build torchvision model ``name`` with its classifier head sized for ``num_classes``.

    ``weights``: None (random init); a torchvision weights name such as ``"DEFAULT"`` or
    ``"IMAGENET1K_V2"`` (found in the torch hub cache or downloaded); or the path of a local
    file holding a state_dict or a ptcore checkpoint (works offline). With ``num_classes``
    None the head keeps the size the weights (or torchvision's default) give it; with a
    different size the head is re-initialised and every other tensor is loaded.
    ``kwargs`` go to the torchvision constructor (e.g. ``image_size=`` for ViTs).
    """
    import torchvision

    from ptcore.models.heads import replace_head
    from ptcore.models.weights import load_weights

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if weights is not None:
        load_weights(model, name, weights, progress=progress)
    if num_classes is not None:
        replace_head(model, num_classes)
    return model
