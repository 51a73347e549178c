"""A model as an ordered list of named stages whose composition is its forward.

Cutting there gives the named split points: a frozen prefix (the feature extractor, what
FeatureCache stores the output of) and a trainable rest. Stage names follow the module
paths ("layer3", "features.7", "encoder.layers.encoder_layer_5", "fc"); a split point is a
stage name or a group of them ("features", "encoder.layers") and includes that stage or
group in the prefix. The last stage is always the classifier head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torchvision.models as tvm

__all__ = ["Stage", "stages", "split_points", "split_index", "split_model", "blocks",
           "StagedModel"]


@dataclass(frozen=True)
class Stage:
    name: str
    module: nn.Module


class _ViTEmbed(nn.Module):
    """Patch projection + class token: ViT's forward up to its encoder."""

    def __init__(self, vit: tvm.VisionTransformer):
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token  # the same Parameter, so it trains in place
        self.patch_size, self.image_size, self.hidden_dim = (vit.patch_size, vit.image_size,
                                                             vit.hidden_dim)

    def forward(self, x):
        # torchvision's own reshaping, so this stage cannot drift from the original model
        x = tvm.VisionTransformer._process_input(self, x)
        return torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)


class _PosEmbed(nn.Module):
    """The encoder's position embedding and its dropout (the encoder's first two steps)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.pos_embedding = encoder.pos_embedding
        self.dropout = encoder.dropout

    def forward(self, x):
        return self.dropout(x + self.pos_embedding)


class _ClassToken(nn.Module):
    def forward(self, x):
        return x[:, 0]


def _children(prefix: str, module: nn.Module) -> list[Stage]:
    return [Stage(f"{prefix}.{n}", m) for n, m in module.named_children()]


def stages(model: nn.Module) -> list[Stage]:
    """The model's stages in forward order (new list of views; parameters are shared)."""
    if isinstance(model, StagedModel):
        model = model.model
    if isinstance(model, tvm.ResNet):
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                 "avgpool"]
        return ([Stage(n, getattr(model, n)) for n in names]
                + [Stage("flatten", nn.Flatten(1)), Stage("fc", model.fc)])
    if isinstance(model, (tvm.AlexNet, tvm.VGG, tvm.MobileNetV3, tvm.EfficientNet)):
        return (_children("features", model.features)
                + [Stage("avgpool", model.avgpool), Stage("flatten", nn.Flatten(1))]
                + _children("classifier", model.classifier))
    if isinstance(model, tvm.VisionTransformer):
        enc = model.encoder
        return ([Stage("conv_proj", _ViTEmbed(model)),
                 Stage("encoder.pos_embedding", _PosEmbed(enc))]
                + _children("encoder.layers", enc.layers)
                + [Stage("encoder.ln", enc.ln), Stage("class_token", _ClassToken())]
                + _children("heads", model.heads))
    raise TypeError(f"cannot split a {type(model).__name__}; supported: torchvision ResNet, "
                    "AlexNet, VGG, MobileNetV3, EfficientNet, VisionTransformer")


def split_points(model: nn.Module) -> list[str]:
    """Every valid split point in forward order: stage names and their groups, except
    those that would freeze the head too (that would leave nothing to train)."""
    st = stages(model)
    last = {}
    for i, s in enumerate(st):
        parts = s.name.split(".")
        for d in range(1, len(parts) + 1):
            last[".".join(parts[:d])] = i
    head = len(st) - 1
    return sorted((n for n, i in last.items() if i < head),
                  key=lambda n: (last[n], -n.count(".")))


def split_index(model: nn.Module, at: str | int | None) -> int:
    """Number of stages in the prefix for split point ``at`` (None: 0, nothing frozen)."""
    st = stages(model)
    if at is None:
        return 0
    if isinstance(at, int) and not isinstance(at, bool):
        if not 0 <= at < len(st):
            raise ValueError(f"split index must be in [0, {len(st) - 1}], got {at}")
        return at
    if not isinstance(at, str):
        raise TypeError(f"split point must be a str, int or None, got {type(at).__name__}")
    last = [i for i, s in enumerate(st) if s.name == at or s.name.startswith(at + ".")]
    if not last or last[-1] == len(st) - 1:
        raise ValueError(f"unknown split point {at!r} for {type(model).__name__}; "
                         f"valid: {', '.join(split_points(model))}")
    return last[-1] + 1


def split_model(model: nn.Module, at: str | int) -> tuple[nn.Sequential, nn.Sequential]:
    """(prefix, rest) with ``rest(prefix(x)) == model(x)``; both share the model's
    parameters."""
    st = stages(model)
    k = split_index(model, at)
    return (nn.Sequential(*[s.module for s in st[:k]]),
            nn.Sequential(*[s.module for s in st[k:]]))


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm))


def blocks(model: nn.Module) -> list[tuple[int, int]]:
    """Stage ranges [start, stop) that form the layer groups for discriminative learning
    rates and gradual unfreezing: each stage with parameters starts a new group unless it is
    a norm layer (it belongs with the layer it normalises); stages without parameters join the
    group before them. The last group is the head."""
    starts = [0]
    for i, s in enumerate(stages(model)):
        if i and any(True for _ in s.module.parameters()) and not _is_norm(s.module):
            starts.append(i)
    n = len(stages(model))
    return list(zip(starts, starts[1:] + [n]))


class StagedModel(nn.Module):
    """The same model, runnable from any stage: ``m(x)`` is the original forward and
    ``m(features, start=k)`` continues from the output of stage k-1 (e.g. cached features).

    It is a view, not a copy: it shares the model's submodules, parameters and buffers under
    the same names, so its state_dict *is* the model's state_dict and training either trains
    both.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if isinstance(model, StagedModel):
            model = model.model
        self.__dict__["model"] = model  # plain attribute: registering it would rename keys
        # Sharing the registries (not copying) keeps names and identities equal to the model's.
        self._modules = model._modules
        self._parameters = model._parameters
        self._buffers = model._buffers
        self._non_persistent_buffers_set = model._non_persistent_buffers_set

    @property
    def stage_list(self) -> list[Stage]:
        # Recomputed so that a head replaced or expanded after wrapping is the one that runs.
        return stages(self.model)

    def forward(self, x, start: int = 0):
        for s in stages(self.model)[start:]:
            x = s.module(x)
        return x
