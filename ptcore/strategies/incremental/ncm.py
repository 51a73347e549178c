"""Nearest class mean (NCM, iCaRL, Rebuffi et al. 2017): classify by the nearest mean of the
exemplars' features, recomputed after each task; and the iCaRL preset."""
from __future__ import annotations

from ptcore.strategies.incremental.features import MeanClassifier, class_means
from ptcore.strategies.incremental.memory import union
from ptcore.strategies.incremental.registry import register, register_preset

__all__ = ["NCM"]


@register
class NCM(MeanClassifier):
    name = "ncm"
    help = "with replay, classify by the nearest mean of the exemplars"
    requires = ("replay",)
    requires_why = ("ncm classifies by the means of the exemplars, so it needs replay too "
                    "(e.g. 'replay+ncm')")
    excludes = {bias: "ncm does not use the head, so there is no head bias for wa or bic to "
                "correct" for bias in ("wa", "bic")}

    def after_task(self, run, t, train):
        # every class's mean moves with the backbone: recompute all
        self.means = class_means(run.model, union(run.memory.datasets(train)),
                                 list(range(run.plan.spans[t][1])), device=run.device,
                                 num_workers=run.fit_args["num_workers"])


register_preset("icarl", ("lwf", "replay", "ncm"), "exemplars chosen by herding",
                selection="herding")
