"""Corrections of a class-incremental head's bias toward the newest classes, applied after a
task is trained: Weight Aligning (WA, Zhao et al. 2020) rescales the new classes' rows of
the head; BiC (Wu et al. 2019) fits a two-parameter affine map of the new classes' logits
on samples held out of training."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["weight_align", "fit_bias", "BiasCorrection"]


@torch.no_grad()
def weight_align(head: nn.Linear, n_old: int, stop: int) -> float:
    """Scale rows ``[n_old, stop)`` of ``head`` so that their mean weight norm equals that of
    rows ``[0, n_old)``; returns the factor γ. The bias of those rows is scaled too, so the
    new classes' logits are exactly γ times what they were (WA's aim) whatever the bias."""
    if not 0 < n_old < stop <= head.out_features:
        raise ValueError(f"need 0 < n_old < stop <= {head.out_features} rows, got "
                         f"n_old={n_old}, stop={stop}")
    norms = head.weight.float().norm(dim=1)
    gamma = float(norms[:n_old].mean() / norms[n_old:stop].mean())
    head.weight[n_old:stop] *= gamma
    if head.bias is not None:
        head.bias[n_old:stop] *= gamma
    return gamma


def fit_bias(logits: torch.Tensor, labels: torch.Tensor, start: int, stop: int, *,
             penalty: float = 0.1, steps: int = 100) -> tuple[float, float]:
    """BiC's stage 2: (α, β) minimising the cross-entropy of ``logits`` [n, C] with columns
    ``[start, stop)`` replaced by α·z + β, everything else fixed, plus
    ``penalty``·((log α)² + β²). α = exp(a) stays positive (the correction never reverses
    an order), and the penalty keeps the optimum finite: a held-out slice of a few samples
    per class is often separable, and then the plain optimum lies at infinity. Convex in
    (a, β) near the identity; L-BFGS in float64 from (1, 0)."""
    z, y = logits.detach().double(), labels.detach().long()
    params = torch.zeros(2, dtype=torch.float64, device=z.device, requires_grad=True)
    new = torch.zeros(z.shape[1], dtype=torch.bool, device=z.device)
    new[start:stop] = True
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        corrected = torch.where(new, params[0].exp() * z + params[1], z)
        loss = F.cross_entropy(corrected, y) + penalty * params.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    log_alpha, beta = params.detach().tolist()
    return math.exp(log_alpha), beta


class BiasCorrection:
    """The (α, β) of every corrected task, applied to its rows' logits at prediction time
    (each fit when its task was the newest, then kept, as BiC's bias layers are)."""

    def __init__(self):
        self.layers: list[tuple[int, int, float, float]] = []  # (start, stop, alpha, beta)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        out = logits.clone()
        for start, stop, alpha, beta in self.layers:
            if start < out.shape[1]:
                out[:, start:stop] = alpha * out[:, start:stop] + beta
        return out

    def state_dict(self) -> dict:
        return {"layers": [list(layer) for layer in self.layers]}

    def load_state_dict(self, state: dict) -> None:
        self.layers = [tuple(layer) for layer in state["layers"]]
