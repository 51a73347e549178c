"""Learning without Forgetting (LwF, Li and Hoiem 2016): distil the old classes' logits of a
frozen snapshot of the model taken before the task, with ``ptcore.kd_loss``. The snapshot's
logits come from a FeatureCache, computed once per task, when the training data is
deterministic and unmixed; otherwise the snapshot runs online on each batch."""
from __future__ import annotations

import copy

import torch

from ptcore.data import is_deterministic
from ptcore.models import freeze as freeze_module
from ptcore.ops import kd_loss
from ptcore.strategies.distill.data import WithTeacherRows
from ptcore.strategies.incremental.registry import Method, Step, Term, register

__all__ = ["LwF"]


@register
class LwF(Method):
    name = "lwf"
    help = ("distil the old classes' logits of a frozen snapshot of the previous model "
            "(temperature, lwf_weight)")

    def __init__(self, options, parts):
        super().__init__(options, parts)
        if not options.lwf_weight >= 0:
            raise ValueError(f"lwf_weight must be >= 0, got {options.lwf_weight!r}")
        self.weight, self.temperature = float(options.lwf_weight), float(options.temperature)
        self.groups: list[tuple[int, int]] = []
        self.teacher = None

    def _groups(self, run, t: int) -> list[tuple[int, int]]:
        """Row ranges distilled separately: all old rows together in the class protocol,
        each old task's rows on their own (LwF's old heads) in the task protocol."""
        spans = run.plan.spans
        n_old = spans[t][0]
        if not n_old:
            return []
        if run.protocol == "class":
            return [(0, n_old)]
        before = [(0, spans[0][0])] if spans[0][0] else []
        return before + spans[:t]

    def before_task(self, run, t, train):
        self.groups = self._groups(run, t)
        self.teacher = (freeze_module(copy.deepcopy(run.model.model)) if self.groups
                        else None)

    def train_data(self, run, t, train, data):
        # Mixed batches: the teacher sees the mixed inputs, so it runs online on them.
        if self.teacher is None or not run.cache or not is_deterministic(data) or run.mix:
            return data, 0
        from ptcore.cache import FeatureCache

        return WithTeacherRows(data, FeatureCache(
            self.teacher, data, dtype=torch.float32, device=run.device,
            progress=run.fit_args["progress"],
            num_workers=run.fit_args["num_workers"]).build()), 1

    def loss_terms(self, run, step: Step):
        if not self.groups:
            return {}
        if step.fields:
            old = step.fields[0]
        else:
            with torch.no_grad():
                old = self.teacher(step.x)
        kd = sum(kd_loss(step.logits[:, a:b].contiguous(), old[:, a:b].float().contiguous(),
                         temperature=self.temperature) for a, b in self.groups) / len(self.groups)
        return {"kd": Term(kd, self.weight)}
