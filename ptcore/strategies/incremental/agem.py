"""Averaged gradient episodic memory (A-GEM, Chaudhry et al. 2019): at each optimizer step
the gradient g of the new data is checked against the gradient g_ref of a random batch of
the memory's exemplars; where they conflict (g·g_ref < 0) g is projected onto the plane
orthogonal to g_ref, g − (g·g_ref / g_ref·g_ref)·g_ref, so that the step does not raise
the exemplars' loss to first order. The memory constrains; it is not trained on (unless
combined with replay)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from ptcore.runtime import distributed as D
from ptcore.strategies.incremental.memory import union
from ptcore.strategies.incremental.registry import Method, register

__all__ = ["project", "AGEM"]


def project(g: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's projection of the flat gradient ``g`` against ``ref``: ``g`` itself unless
    they conflict, then its component orthogonal to ``ref``."""
    dot = torch.dot(g, ref)
    if dot >= 0:
        return g
    return g - (dot / torch.dot(ref, ref)) * ref


@register
class AGEM(Method):
    name = "a-gem"
    help = ("project each step's gradient so that it does not raise the loss of a random "
            "batch of exemplars (agem_batch; memory, selection)")
    uses_memory = True

    def __init__(self, options, parts):
        super().__init__(options, parts)
        if isinstance(options.agem_batch, bool) or not isinstance(options.agem_batch, int) \
                or options.agem_batch < 1:
            raise ValueError(f"agem_batch must be a positive int, got {options.agem_batch!r}")
        self.batch = options.agem_batch
        # the exemplars reference batches are drawn from (not `exemplars`: that is
        # Method.exemplars(), the count the results report)
        self.drawn_from = None

    def before_task(self, run, t, train):
        self.drawn_from = union(run.memory.datasets(train)) if t and len(run.memory) else None

    def reference(self, run, model, params: list) -> torch.Tensor:
        """The flat gradient of the loss on ``agem_batch`` random exemplars (drawn by the
        global generator, which the engine's checkpoints restore), averaged over processes."""
        picks = torch.randperm(len(self.drawn_from))[: self.batch].tolist()
        x, y = (v.to(run.device) for v in default_collate([self.drawn_from[i] for i in picks]))
        logits = model(x).float()
        loss = F.cross_entropy(run.restrict(logits, y, run.plan.row_task().to(run.device)), y)
        ref = torch.cat([g.flatten() for g in torch.autograd.grad(
            loss, params, materialize_grads=True)])
        return D.all_sum(ref) / D.world_size()

    def before_step(self, run, model):
        if self.drawn_from is None:
            return
        params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
        ref = self.reference(run, model, params)
        g = torch.cat([p.grad.flatten() for p in params])
        for p, new in zip(params, project(g, ref).split([p.numel() for p in params])):
            p.grad.copy_(new.view_as(p.grad))
