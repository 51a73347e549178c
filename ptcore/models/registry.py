"""Which classification models ptcore can build, and how: every torchvision classifier by
its name, every timm model as ``timm/<name>`` (timm is optional)."""
from __future__ import annotations

import fnmatch

import torch.nn as nn

__all__ = ["MODELS", "TIMM_PREFIX", "list_models", "create_model", "is_timm"]

TIMM_PREFIX = "timm/"


def _torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


# Every classification model of torchvision.models (not detection, segmentation, video).
MODELS: tuple[str, ...] = _torchvision_names()

# GoogLeNet and Inception v3 carry auxiliary classifiers that change what forward returns in
# train mode; ptcore drops them (they only help training from scratch). Their pretrained
# weights were trained with them and with ``transform_input`` (torchvision's builders set
# both when they load the weights themselves), so a load needs them present first.
_AUX = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}


def is_timm(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def _timm():
    try:
        import timm
    except ImportError as e:
        raise ImportError("timm models need the optional dependency timm: "
                          "pip install 'ptcore[timm]' (or pip install timm)") from e
    return timm


def list_models(source: str = "torchvision", filter: str | None = None) -> list[str]:
    """Names accepted by :func:`create_model`: ``source`` "torchvision" (the default),
    "timm" (``timm/<name>``, needs timm) or "all"; ``filter`` a glob or substring."""
    if source not in ("torchvision", "timm", "all"):
        raise ValueError(f"source must be 'torchvision', 'timm' or 'all', got {source!r}")
    names = list(MODELS) if source != "timm" else []
    if source != "torchvision":
        names += [TIMM_PREFIX + n for n in _timm().list_models()]
    if filter:
        pattern = filter if any(c in filter for c in "*?[") else f"*{filter}*"
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)
                 or fnmatch.fnmatchcase(n[len(TIMM_PREFIX):] if is_timm(n) else n, pattern)]
    return sorted(names)


def _drop_aux(model: nn.Module, name: str) -> None:
    for attr in _AUX.get(name, ()):
        setattr(model, attr, None)
    if name in _AUX:
        model.aux_logits = False


def _create_torchvision(name: str, weights, progress: bool, kwargs: dict) -> nn.Module:
    import torchvision

    from ptcore.models.weights import _is_path, load_weights

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose a torchvision classifier (see "
                         f"`ptcore models`) or timm/<name>")
    if name in _AUX:
        named = weights is not None and not _is_path(weights)
        kwargs = {"aux_logits": named, "init_weights": not named,
                  **({"transform_input": True} if named else {}), **kwargs}
    if isinstance(weights, str) and not _is_path(weights) and name.startswith("vit_"):
        # ViT weights fix the image size (SWAG ones are 384 or 518), as torchvision's builder
        member = torchvision.models.get_model_weights(name).__members__.get(weights)
        if member is not None:
            kwargs = {"image_size": member.meta["min_size"][0], **kwargs}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if weights is not None:
        load_weights(model, name, weights, progress=progress)
    _drop_aux(model, name)
    return model


def _create_timm(name: str, weights, num_classes: int | None, kwargs: dict) -> nn.Module:
    from ptcore.models.weights import _is_path, load_weights

    timm = _timm()
    arch = name[len(TIMM_PREFIX):]
    if not timm.is_model(arch.split(".")[0]):
        raise ValueError(f"unknown timm model {arch!r} (see `ptcore models --timm`)")
    extra = {} if num_classes is None else {"num_classes": num_classes}
    if weights is not None and _is_path(weights):
        model = timm.create_model(arch, pretrained=False, **kwargs)
        return load_weights(model, name, weights)  # the file sizes the head
    if weights is None:
        return timm.create_model(arch, pretrained=False, **extra, **kwargs)
    if not isinstance(weights, str):
        raise TypeError(f"weights must be 'DEFAULT', a timm pretrained tag or a path, got "
                        f"{type(weights).__name__}")
    tagged = arch if weights == "DEFAULT" else f"{arch.split('.')[0]}.{weights}"
    try:
        return timm.create_model(tagged, pretrained=True, **extra, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        raise RuntimeError(
            f"could not get timm weights {tagged!r} ({type(e).__name__}: {e}). Offline? Fill "
            "the Hugging Face cache (HF_HOME) on a connected machine, or pass weights=PATH to "
            "a local state_dict or ptcore checkpoint file") from e


def create_model(name: str, *, num_classes: int | None = None, weights=None,
                 progress: bool = True, **kwargs) -> nn.Module:
    """Build model ``name`` with its classifier head sized for ``num_classes``.

    ``name``: a torchvision classifier ("resnet50", "convnext_tiny", ...) or
    ``timm/<name>`` ("timm/resnet50d"). ``weights``: None (random init); a torchvision
    weights name such as ``"DEFAULT"`` or ``"IMAGENET1K_V2"`` (found in the torch hub cache
    or downloaded), for timm ``"DEFAULT"`` or a pretrained tag ("a1_in1k", from the Hugging
    Face cache or downloaded); or the path of a local file holding a state_dict or a ptcore
    checkpoint (works offline). With ``num_classes`` None the head keeps the size the weights
    (or the library's default) give it; with a different size the head is re-initialised and
    every other tensor is loaded. ``kwargs`` go to the model constructor (e.g.
    ``image_size=`` for torchvision ViTs).
    """
    from ptcore.models.heads import replace_head

    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if is_timm(name):
        model = _create_timm(name, weights, num_classes, dict(kwargs))
    else:
        model = _create_torchvision(name, weights, progress, dict(kwargs))
    if num_classes is not None:
        replace_head(model, num_classes)
    return model
