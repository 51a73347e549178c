"""The input preprocessing that goes with a model's weights.

torchvision weights carry their own evaluation transform (``weights.transforms()``: ResNet-50
V2 resizes to 232, EfficientNet is bicubic, ViT SWAG is 384), timm models a data config
(``resolve_data_config``). With such weights the default evaluation transform is exactly
theirs; the training augmentations (:mod:`ptcore.data.augment`) read the same crop size,
interpolation, mean and std from a :class:`Preprocessing`. Without them (random init, a
local file) the ImageNet defaults hold: resize to 256/224 of the crop, bilinear, ImageNet
mean/std. Any field can be overridden (a config's ``data.preprocess``); then the transforms
are built from the fields.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

__all__ = ["Preprocessing", "preprocessing", "eval_transform", "model_preprocessing",
           "model_transform"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects as input. ``native``: the weights' own evaluation transform
    (used as is while no field is overridden)."""
    crop_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"
    mean: tuple = _IMAGENET_MEAN
    std: tuple = _IMAGENET_STD
    source: str = "ImageNet defaults"
    native: object = None

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "native"}


def _torchvision(name: str, weights: str) -> Preprocessing:
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    if weights not in enum.__members__:
        raise ValueError(f"unknown weights {weights!r} for {name}; choose one of "
                         f"{', '.join(enum.__members__)}")
    native = enum[weights].transforms()
    return Preprocessing(native.crop_size[0], native.resize_size[0], native.interpolation.value,
                         tuple(native.mean), tuple(native.std),
                         f"torchvision {name}.{weights}", native)


def _timm(arch: str) -> Preprocessing:
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None:
        raise ValueError(f"timm has no pretrained config for {arch!r}")
    data = resolve_data_config(pretrained_cfg=cfg.to_dict())
    crop = data["input_size"][-1]
    native = create_transform(**data, is_training=False)
    return Preprocessing(crop, math.floor(crop / data["crop_pct"]), data["interpolation"],
                         tuple(data["mean"]), tuple(data["std"]), f"timm {arch}", native)


def preprocessing(model: str, weights=None, **overrides) -> Preprocessing:
    """The preprocessing of ``model`` (a name of :func:`ptcore.models.create_model`) with
    ``weights``, with ``overrides`` (fields of :class:`Preprocessing`; ``image_size`` is
    ``crop_size`` and, unless given too, scales ``resize_size`` by the same ratio)."""
    from ptcore.models.registry import TIMM_PREFIX, is_timm
    from ptcore.models.weights import _is_path

    named = isinstance(weights, str) and not _is_path(weights)
    if named and is_timm(model):
        arch = model[len(TIMM_PREFIX):]
        base = _timm(arch if weights == "DEFAULT" else f"{arch.split('.')[0]}.{weights}")
    elif named:
        base = _torchvision(model, weights)
    else:
        base = Preprocessing()
    if "image_size" in overrides:
        size = overrides.pop("image_size")
        overrides.setdefault("resize_size", round(size * base.resize_size / base.crop_size))
        overrides["crop_size"] = size
    unknown = set(overrides) - {f.name for f in fields(Preprocessing)} - {"source", "native"}
    if unknown:
        raise ValueError(f"unknown preprocessing field(s) {sorted(unknown)}; allowed: "
                         "image_size, crop_size, resize_size, interpolation, mean, std")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not overrides:
        return base
    if overrides.get("interpolation", base.interpolation) not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got "
                         f"{overrides['interpolation']!r}")
    for key in ("mean", "std"):
        if key in overrides:
            overrides[key] = tuple(float(v) for v in overrides[key])
            if len(overrides[key]) != 3:
                raise ValueError(f"{key} must hold 3 values (RGB), got {overrides[key]}")
    return replace(base, **overrides, native=None, source=base.source + " (overridden)")


def _rgb(img):
    return img.convert("RGB")


def _mode(p: Preprocessing):
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(p.interpolation)


def eval_transform(p: Preprocessing):
    """PIL image -> normalised RGB tensor: the weights' own transform when ``p`` has one,
    else resize, center crop, normalise."""
    from torchvision import transforms as T

    if p.native is not None:
        return T.Compose([T.Lambda(_rgb), p.native])
    return T.Compose([T.Lambda(_rgb), T.Resize(p.resize_size, interpolation=_mode(p)),
                      T.CenterCrop(p.crop_size), T.ToTensor(), T.Normalize(p.mean, p.std)])


def model_preprocessing(model: str, weights=None, *, image_size: int | None = None,
                        overrides: dict | None = None) -> Preprocessing:
    """What the commands and `ptcore run` read data with: the model's weights' preprocessing
    at ``image_size`` (``--image-size``, a config's ``data.image_size``) with ``overrides``
    (``--preprocess``, ``data.preprocess``); an override of the size (``image_size`` or
    ``crop_size``) wins over ``image_size``."""
    overrides = dict(overrides or {})
    if image_size and not {"image_size", "crop_size"} & set(overrides):
        overrides["image_size"] = image_size
    return preprocessing(model, weights, **overrides)


def model_transform(model: str, weights=None, *, image_size: int | None = None,
                    overrides: dict | None = None):
    """The evaluation transform of :func:`model_preprocessing`."""
    return eval_transform(model_preprocessing(model, weights, image_size=image_size,
                                              overrides=overrides))
