"""APER / ADAM (Zhou et al. 2023/2024, "Revisiting class-incremental learning with
pre-trained models: generalizability and adaptivity are all you need"): on the first task
adapt a copy of the pretrained backbone (all of it, or only its BatchNorm layers, with the
head), then freeze both. A sample's feature is the concatenation of the frozen pretrained
backbone's and the adapted one's normalised penultimate features (each half weighs the
same); each class's prototype is the normalised mean of those, added once per task from a
FeatureCache pass; classification is by cosine to the prototypes, as SimpleCIL's. The
pretrained half keeps what generalises, the adapted half what the downstream data needs."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ptcore import engine
from ptcore.models import freeze as freeze_module
from ptcore.models import get_head, stages
from ptcore.runtime import distributed as D
from ptcore.strategies._param_groups import layer_decay_groups
from ptcore.strategies.incremental.features import backbone_features, means_of
from ptcore.strategies.incremental.registry import Method, register

__all__ = ["APER", "ADAPTS", "pretrained_backbone"]

ADAPTS = ("full", "bn")  # what the first task trains (besides the head)


def pretrained_backbone(model: nn.Module) -> nn.Sequential:
    """A frozen copy of every stage of ``model`` but the head (its input, un-normalised)."""
    return freeze_module(nn.Sequential(*copy.deepcopy([s.module for s in stages(model)[:-1]])))


class Both(nn.Module):
    """[normalised pretrained features, normalised adapted features] / √2 (unit norm)."""

    def __init__(self, pretrained: nn.Module, adapted: nn.Module):
        super().__init__()
        self.pretrained, self.adapted = pretrained, adapted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = F.normalize(self.pretrained(x).flatten(1).float(), dim=1)
        return torch.cat([old, backbone_features(self.adapted, x)], 1) / 2 ** 0.5


@register
class APER(Method):
    name = "aper"
    help = ("alone: adapt the backbone on the first task (aper_adapt: full or bn, with the "
            "run's lr and epochs), freeze it; prototypes of pretrained+adapted features")
    alone = True
    trains = False  # no step of the run's own loop: the adaptation is the first task's
    unmixed = "its prototypes come from the unmixed training data"
    every_class = True
    state_key = "aper"

    def __init__(self, options, parts):
        super().__init__(options, parts)
        if options.aper_adapt not in ADAPTS:
            raise ValueError(f"aper_adapt must be one of {ADAPTS}, got {options.aper_adapt!r}")
        self.adapt = options.aper_adapt
        self.pretrained: nn.Module | None = None   # the frozen pretrained backbone
        self.means: torch.Tensor | None = None     # [C, 2d] prototypes, head-row order
        self._loaded: dict | None = None           # its state, until a run rebuilds it

    def _both(self, run) -> Both:
        if self.pretrained is None and self._loaded is not None:  # resumed
            self.pretrained = pretrained_backbone(run.model)
            self.pretrained.load_state_dict(self._loaded)
            self.pretrained.to(run.device)
            self._loaded = None
        return Both(self.pretrained, run.model)

    def after_training(self, run, t, train):
        if t == 0:
            self.pretrained = pretrained_backbone(run.model)
            run.history[-1] = self._adapt_first(run, train[0])  # the first task's epochs

    def _adapt_first(self, run, data) -> list[dict]:
        """Train ``run.model`` (all of it, or its BatchNorm layers and head) on the first
        task with the run's optimizer and schedule; the run trains nothing after this."""
        model = run.model
        chosen = set(map(id, model.parameters()))
        if self.adapt == "bn":
            chosen = {id(p) for m in model.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
            chosen |= set(map(id, get_head(model).parameters()))
        was = {p: p.requires_grad for p in model.parameters()}
        for p in model.parameters():
            p.requires_grad_(was[p] and id(p) in chosen)
        try:
            optimizer = engine.make_optimizer(layer_decay_groups(
                model, run.lr, 1.0, run.weight_decay), **run.optim)
            history = engine.fit(model, data, optimizer, device=run.device, seed=run.seed,
                                 meta={"task": 0, "method": run.method}, **run.fit_args)
        finally:
            for p, flag in was.items():
                p.requires_grad_(flag)
        if D.is_distributed():  # every rank continues with rank 0's BatchNorm statistics
            for b in model.buffers():
                torch.distributed.broadcast(b, src=0)
        return history

    def after_task(self, run, t, train):
        from ptcore.cache import FeatureCache

        # both backbones are frozen from here on: each sample's features once
        cache = FeatureCache(self._both(run), train[t], dtype=torch.float32,
                             device=run.device, shard=True,
                             progress=run.fit_args["progress"]).build()
        new = means_of(cache.get(slice(None)), cache.labels, list(range(*run.plan.spans[t])))
        self.means = new if self.means is None else torch.cat([self.means, new])

    def scores(self, run, x):
        return None if self.means is None else self._both(run)(x) @ self.means.T

    def state_dict(self):
        # the adapted backbone is the run's model (saved as such); the pretrained one is not
        pretrained = (self.pretrained.state_dict() if self.pretrained is not None
                      else self._loaded)
        return {"adapt": self.adapt, "means": self.means, "pretrained": pretrained}

    def load_state_dict(self, state, device):
        if state["adapt"] != self.adapt:
            raise ValueError(f"the checkpoint's APER adapted {state['adapt']!r}, this run "
                             f"{self.adapt!r}: resume with the same aper_adapt")
        self.means = state["means"].to(device)
        self.pretrained, self._loaded = None, state["pretrained"]
