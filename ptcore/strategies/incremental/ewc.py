"""Elastic weight consolidation, online (Kirkpatrick et al. 2017; Schwarz et al. 2018): a
diagonal Fisher F accumulated over tasks, F <- decay * F + F_task, anchors θ* at the
parameters after the last task, and the penalty (λ/2)·Σ F·(θ − θ*)², added to every step
of the later tasks. F_task is the empirical Fisher normalised to mean 1 over the
parameters (docs/incremental.md, "EWC": its raw scale follows how well the model fits)."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from torch.utils.data import Subset
from tqdm.auto import tqdm

from ptcore.engine.loaders import make_loader
from ptcore.runtime import distributed as D
from ptcore.strategies.incremental.per_sample import squared_grads
from ptcore.strategies.incremental.registry import Method, Term, register

__all__ = ["EWC", "EWCMethod"]


def _grown(old: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``old`` zero-padded to ``shape`` (a head that gained rows: the new rows are unanchored)."""
    if old.shape == shape:
        return old
    out = old.new_zeros(shape)
    out[tuple(slice(0, s) for s in old.shape)] = old
    return out


class EWC:
    """``samples``: the Fisher of a task is estimated on at most this many of its samples
    (a fixed random subset, seeded by ``seed``); None: all. The estimate settles within a
    few hundred samples."""

    def __init__(self, lam: float, decay: float = 1.0, *, samples: int | None = None,
                 seed: int = 0):
        if not lam >= 0:
            raise ValueError(f"ewc_lambda must be >= 0, got {lam!r}")
        if not 0 <= decay <= 1:
            raise ValueError(f"ewc_decay must be in [0, 1], got {decay!r}")
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)
                                    or samples < 1):
            raise ValueError(f"ewc_samples must be a positive int or None, got {samples!r}")
        self.lam, self.decay = float(lam), float(decay)
        self.samples, self.seed = samples, seed
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """(λ/2)·Σ F·(θ − θ*)² over the anchored parameters; a parameter that has grown
        since (the head) is compared on its anchored rows only."""
        total = None
        for name, p in model.named_parameters():
            if name in self.fisher:
                f, a = self.fisher[name], self.anchor[name]
                term = (f * (p[tuple(slice(0, s) for s in f.shape)] - a).pow(2)).sum()
                total = term if total is None else total + term
        if total is None:
            return torch.zeros((), device=next(model.parameters()).device)
        return 0.5 * self.lam * total

    def update(self, model: nn.Module, data, nll: Callable, *, device, batch_size: int = 16,
               progress: bool = True, num_workers=0) -> None:
        """Add the Fisher of ``data`` (the mean over samples of each sample's squared
        gradient of ``nll(logits [B, C], labels [B])``, the mean of per-sample losses; model
        in eval mode) and re-anchor at the current parameters. Each process takes every
        world-th sample; the sums are reduced, so every process holds the same Fisher."""
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        buffers = dict(model.named_buffers())

        def sample_nll(ps, x, y):
            z = functional_call(model, (ps, buffers), (x[None],))
            return nll(z.to(torch.promote_types(z.dtype, torch.float32)), y[None])

        per_sample = vmap(grad(sample_nll), in_dims=(None, 0, 0))
        sums = {n: torch.zeros_like(p, dtype=torch.promote_types(p.dtype, torch.float32))
                for n, p in params.items()}
        chosen = range(len(data))
        if self.samples is not None and len(data) > self.samples:
            g = torch.Generator().manual_seed(self.seed)
            chosen = sorted(torch.randperm(len(data), generator=g)[:self.samples].tolist())
        shard = Subset(data, chosen[D.rank()::D.world_size()])
        was_training = model.training
        model.eval()
        loader = make_loader(shard, batch_size, num_workers=num_workers, device=device)
        for x, y in tqdm(loader, desc="Fisher", leave=False,
                         disable=not (progress and D.is_main())):
            x, y = x.to(device), y.to(device)
            # One backward for the batch where every layer allows it; torch.func otherwise.
            squares = squared_grads(model, params, x, y, nll)
            if squares is None:
                squares = {n: g.to(sums[n].dtype).pow(2).sum(0)
                           for n, g in per_sample(params, x, y).items()}
            for n, sq in squares.items():
                sums[n] += sq
        model.train(was_training)
        flat = D.all_sum(torch.cat([s.flatten() for s in sums.values()]
                                   + [torch.tensor([float(len(shard))], device=device)]))
        # Normalised to mean 1 over the parameters: the count cancels, and so does the
        # scale of the empirical Fisher, which falls with the square of the residuals (a
        # task the model fits well gives orders of magnitude less), so λ means the same
        # on every task, model and seed.
        squares = flat[:-1]
        scale = squares.mean()
        for (n, s), part in zip(sums.items(), squares.split([s.numel() for s in sums.values()])):
            new = part.view_as(s) / scale if scale > 0 else torch.zeros_like(s)
            old = self.fisher.get(n)
            self.fisher[n] = new if old is None else self.decay * _grown(old, new.shape) + new
            self.anchor[n] = params[n].clone()

    def state_dict(self) -> dict:
        return {"fisher": dict(self.fisher), "anchor": dict(self.anchor)}

    def load_state_dict(self, state: dict) -> None:
        self.fisher, self.anchor = dict(state["fisher"]), dict(state["anchor"])


@register
class EWCMethod(Method):
    name = "ewc"
    help = "online diagonal-Fisher penalty (ewc_lambda, ewc_decay, ewc_samples)"
    state_key = "ewc"

    def __init__(self, options, parts):
        super().__init__(options, parts)
        self.ewc = EWC(options.ewc_lambda, options.ewc_decay, samples=options.ewc_samples,
                       seed=options.seed)

    def loss_terms(self, run, step):
        return {"ewc": Term(self.ewc.penalty(run.model))}

    def after_task(self, run, t, train):
        if t == len(train) - 1:  # no task follows the last one
            return
        row_task = run.plan.row_task().to(run.device)
        self.ewc.update(run.model, train[t],
                        lambda z, y: F.cross_entropy(run.restrict(z, y, row_task), y),
                        device=run.device, progress=run.fit_args["progress"],
                        num_workers=run.fit_args["num_workers"])

    def state_dict(self):
        return self.ewc.state_dict()

    def load_state_dict(self, state, device):  # its tensors meet the parameters on the device
        self.ewc.load_state_dict({k: {n: v.to(device) for n, v in d.items()}
                                  for k, d in state.items()})
