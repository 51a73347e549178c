"""A model as an ordered list of named stages whose composition is its forward.

Cutting there gives the named split points: a frozen prefix (the feature extractor, what
FeatureCache stores the output of) and a trainable rest. Stage names follow the module
paths ("layer3", "features.7", "encoder.layers.encoder_layer_5", "fc"); a split point is a
stage name or a group of them ("features", "encoder.layers") and includes that stage or
group in the prefix. The last stage is always the classifier head. Stages are derived for
any model (every torchvision classifier, timm models) by :mod:`ptcore.models._trace`.
"""
from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass

import torch.nn as nn
from torch.fx import GraphModule

from ptcore.models._trace import segment_module, trace_segments

__all__ = ["Stage", "stages", "split_points", "split_index", "split_model", "blocks",
           "StagedModel"]


@dataclass(frozen=True)
class Stage:
    name: str
    module: nn.Module


# model -> (the modules its stages call, its stages). Tracing is done once per model; a
# replaced submodule (a new head) changes the key and the stages are derived again.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stages(model: nn.Module) -> list[Stage]:
    """The model's stages in forward order (new list of views; parameters are shared)."""
    if isinstance(model, StagedModel):
        model = model.model
    hit = _CACHE.get(model)
    if hit is not None:
        calls, key, cached = hit
        try:
            if tuple(id(model.get_submodule(c)) for c in calls) == key:
                return _in_mode(cached, model.training)
        except AttributeError:  # a called module was removed
            pass
    segments = trace_segments(model)
    cached = [Stage(s.name, segment_module(model, s)) for s in segments]
    calls = [c for s in segments for c in s.modules]
    _CACHE[model] = (calls, tuple(id(model.get_submodule(c)) for c in calls), cached)
    return _in_mode(cached, model.training)


def _in_mode(cached: list[Stage], training: bool) -> list[Stage]:
    """The stages with their own glue modules (dropout that was functional in the model's
    forward) in the model's train/eval mode: they are not the model's submodules, so
    ``model.train()`` does not reach them."""
    for s in cached:
        if isinstance(s.module, GraphModule):
            for name, m in s.module.named_children():
                if name.startswith("glue_"):
                    m.training = training
    return list(cached)


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


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def _is_norm(m: nn.Module) -> bool:
    """Whether every module with parameters in ``m`` is a norm layer (LayerNorm2d too)."""
    own = [x for x in m.modules() if any(True for _ in x.parameters(recurse=False))]
    return bool(own) and all(isinstance(x, _NORMS) for x in own)


def _timm_groups(model: nn.Module) -> dict[int, int] | None:
    """id(parameter) -> layer group of timm's own ``group_matcher`` (coarse: one group per
    stage of the network), for models that have one."""
    matcher = getattr(model, "group_matcher", None)
    if matcher is None or "timm" not in sys.modules:
        return None
    from timm.models import group_parameters

    params = dict(model.named_parameters())
    return {id(params[n]): g for g, names in group_parameters(model, matcher(coarse=True)).items()
            for n in names}


def blocks(model: nn.Module) -> list[tuple[int, int]]:
    """Stage ranges [start, stop) that form the layer groups for discriminative learning
    rates and gradual unfreezing. timm models follow their own ``group_matcher``; otherwise
    each stage with parameters starts a new group unless it is a norm layer (it belongs with
    the layer it normalises). Stages without parameters join the group before them. The last
    group is the head."""
    st = stages(model)
    groups = _timm_groups(model.model if isinstance(model, StagedModel) else model)
    starts, previous = [0], None
    for i, s in enumerate(st):
        params = list(s.module.parameters())
        if not params:
            continue
        if groups is not None:
            group = min(groups.get(id(p), -1) for p in params)
            new = previous is not None and group != previous
            previous = group
        else:
            new = not _is_norm(s.module)
        if i and (new or i == len(st) - 1):
            starts.append(i)
    starts = sorted(set(starts))
    return list(zip(starts, starts[1:] + [len(st)]))


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
