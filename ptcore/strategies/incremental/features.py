"""Penultimate-layer features of a model, per-class means of them, and nearest-class-mean
scores (iCaRL's NCM classifier, SimpleCIL's prototypes). Features are L2-normalised, so the
nearest mean is the one of highest cosine similarity. :class:`MeanClassifier` is the part of
those methods that classifies by the means."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Subset

from ptcore.engine.loaders import make_loader
from ptcore.models import stages
from ptcore.runtime import distributed as D
from ptcore.strategies.incremental.registry import Method

__all__ = ["Backbone", "backbone_features", "embed", "class_means", "means_of", "ncm_scores",
           "MeanClassifier"]


def backbone_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """L2-normalised input of the head: every stage but the last."""
    for s in stages(model)[:-1]:
        x = s.module(x)
    return F.normalize(x.flatten(1).float(), dim=1)


class Backbone(nn.Module):
    """:func:`backbone_features` as a module (what a FeatureCache runs)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return backbone_features(self.model, x)


@torch.no_grad()
def embed(model: nn.Module, data, *, device, batch_size: int = 256,
          shard: bool = False, num_workers=0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, d], labels [N]) of ``data`` in eval mode; with ``shard`` only this
    process's share (every world-th sample)."""
    was_training = model.training
    model.eval()
    if shard:
        data = Subset(data, range(D.rank(), len(data), D.world_size()))
    feats, labels = [], []
    for x, y in make_loader(data, batch_size, num_workers=num_workers, device=device):
        feats.append(backbone_features(model, x.to(device)))
        labels.append(y.to(device))
    model.train(was_training)
    if not feats:
        d = stages(model)[-1].module.in_features
        return torch.empty(0, d, device=device), torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(feats), torch.cat(labels)


def class_means(model: nn.Module, data, rows: list[int], *, device,
                batch_size: int = 256, num_workers=0) -> torch.Tensor:
    """[len(rows), d]: the normalised mean feature of the samples of ``data`` labelled with
    each of ``rows``, summed over processes (so every process gets the same means)."""
    feats, labels = embed(model, data, device=device, batch_size=batch_size, shard=True,
                          num_workers=num_workers)
    return means_of(feats, labels, rows)


def means_of(feats: torch.Tensor, labels: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """[len(rows), d]: the normalised mean of the rows of ``feats`` labelled with each of
    ``rows`` (this process's share), summed over processes."""
    device, labels = feats.device, labels.to(feats.device)
    size = max(rows) + 1  # the same on every process, whatever its shard holds
    keep = labels < size
    feats, labels = feats[keep], labels[keep]
    sums = torch.zeros(size, feats.shape[1] + 1, dtype=torch.float64, device=device)
    sums.index_add_(0, labels, torch.cat([feats, torch.ones_like(feats[:, :1])], 1).double())
    sums = D.all_sum(sums)[rows]
    empty = [r for r, n in zip(rows, sums[:, -1].tolist()) if n == 0]
    if empty:
        raise ValueError(f"no samples of head rows {empty} to compute their class means from")
    return F.normalize((sums[:, :-1] / sums[:, -1:]).float(), dim=1)


def ncm_scores(model: nn.Module, x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each sample's features to each class mean: [B, C], used as
    logits (argmax = nearest class mean)."""
    return backbone_features(model, x) @ means.T


class MeanClassifier(Method):
    """A method that classifies by class means (head-row order) instead of the head."""
    every_class = True
    state_key = "means"

    def __init__(self, options, parts):
        super().__init__(options, parts)
        self.means: torch.Tensor | None = None

    def scores(self, run, x):
        return None if self.means is None else ncm_scores(run.model, x, self.means)

    def state_dict(self):
        return self.means

    def load_state_dict(self, state, device):
        self.means = None if state is None else state.to(device)
