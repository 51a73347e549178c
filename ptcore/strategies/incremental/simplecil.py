"""SimpleCIL (Zhou et al. 2023): a frozen backbone and class-mean prototypes of each task's
training data, computed once; nothing is trained."""
from __future__ import annotations

import torch

from ptcore.strategies.incremental.features import MeanClassifier, class_means
from ptcore.strategies.incremental.registry import register

__all__ = ["SimpleCIL"]


@register
class SimpleCIL(MeanClassifier):
    name = "simplecil"
    help = "alone: frozen backbone, class-mean prototypes"
    alone = True
    trains = False
    unmixed = "it trains nothing"

    def after_task(self, run, t, train):
        # the backbone is frozen: old prototypes stay valid
        new = class_means(run.model, train[t], list(range(*run.plan.spans[t])),
                          device=run.device, num_workers=run.fit_args["num_workers"])
        self.means = new if self.means is None else torch.cat([self.means, new])
