"""Memory aware synapses (MAS, Aljundi et al. 2018): a parameter's importance is how much the
function the model computes moves with it, measured without labels as the mean over samples
of |∂‖f(x)‖²/∂θ| (f: the output logits, ‖·‖ the L2 norm), summed over tasks; later tasks
pay λ·Σ Ω·(θ − θ*)² for moving the parameters away from θ*, those after the last task."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import Subset

from ptcore.engine.loaders import make_loader
from ptcore.runtime import distributed as D
from ptcore.strategies.incremental.registry import Method, Term, register

__all__ = ["importance", "MAS"]


def importance(model: nn.Module, data, *, device, samples: int | None = None, seed: int = 0,
               batch_size: int = 16, num_workers=0) -> dict[str, torch.Tensor]:
    """Ω of each trainable parameter of ``model`` (eval mode) over ``data``, or a fixed random
    subset of ``samples`` of it: per-sample gradients by ``torch.func``; each process takes
    every world-th sample and the sums are reduced."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def squared_norm(ps, x):
        return functional_call(model, (ps, buffers), (x[None],)).float().pow(2).sum()

    per_sample = vmap(grad(squared_norm), in_dims=(None, 0))
    chosen = range(len(data))
    if samples is not None and len(data) > samples:
        g = torch.Generator().manual_seed(seed)
        chosen = sorted(torch.randperm(len(data), generator=g)[:samples].tolist())
    shard = Subset(data, chosen[D.rank()::D.world_size()])
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = model.training
    model.eval()
    for x, _ in make_loader(shard, batch_size, num_workers=num_workers, device=device):
        for n, g in per_sample(params, x.to(device)).items():
            sums[n] += g.float().abs().sum(0)
    model.train(was_training)
    flat = D.all_sum(torch.cat([s.flatten() for s in sums.values()]
                               + [torch.tensor([float(len(shard))], device=device)]))
    parts = flat[:-1].split([s.numel() for s in sums.values()])
    return {n: part.view_as(s) / flat[-1] for (n, s), part in zip(sums.items(), parts)}


@register
class MAS(Method):
    name = "mas"
    help = ("penalise moving the parameters the outputs are sensitive to, importance from "
            "unlabelled data (mas_lambda, mas_samples)")
    state_key = "mas"

    def __init__(self, options, parts):
        super().__init__(options, parts)
        if not options.mas_lambda >= 0:
            raise ValueError(f"mas_lambda must be >= 0, got {options.mas_lambda!r}")
        samples = options.mas_samples
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)
                                    or samples < 1):
            raise ValueError(f"mas_samples must be a positive int or None, got {samples!r}")
        self.lam, self.samples, self.seed = float(options.mas_lambda), samples, options.seed
        self.omega: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def loss_terms(self, run, step):
        total = step.logits.new_zeros(())
        for name, p in run.model.named_parameters():
            if name in self.omega:  # a grown head: its anchored rows only
                omega = self.omega[name]
                old = p[tuple(slice(0, s) for s in omega.shape)]
                total = total + (omega * (old - self.anchor[name]).pow(2)).sum()
        return {"mas": Term(total, self.lam)}

    def after_task(self, run, t, train):
        if t == len(train) - 1:  # no task follows the last one
            return
        new = importance(run.model, train[t], device=run.device, samples=self.samples,
                         seed=self.seed, num_workers=run.fit_args["num_workers"])
        for name, omega in new.items():
            old = self.omega.get(name)
            if old is not None:  # the head grew since: its new rows had no importance
                omega = omega.clone()
                omega[tuple(slice(0, s) for s in old.shape)] += old
            self.omega[name] = omega
        self.anchor = {n: p.detach().clone() for n, p in run.model.named_parameters()
                       if n in self.omega}

    def state_dict(self):
        return {"omega": dict(self.omega), "anchor": dict(self.anchor)}

    def load_state_dict(self, state, device):
        self.omega, self.anchor = ({n: v.to(device) for n, v in state[k].items()}
                                   for k in ("omega", "anchor"))
