"""Bias Correction (BiC, Wu et al. 2019): after a task is trained, correct the head's bias
toward the newest classes with a two-parameter affine map of their logits, fit on samples
of every class held out of training (a share of the exemplar memory's quota, taken out of
its budget or, with ``bic_validation="beside"``, kept beside it)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ptcore.data import LabeledSubset
from ptcore.strategies.incremental.memory import union
from ptcore.strategies.incremental.registry import Method, register

__all__ = ["VALIDATIONS", "fit_bias", "BiasCorrection", "BiC"]

VALIDATIONS = ("memory", "beside")  # where the held-out slice is kept


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


@register
class BiC(Method):
    name = "bic"
    help = ("with replay or der: fit a + b*z on the new classes' logits over a held-out share "
            "bic_holdout of the memory (bic_validation: out of its budget, or beside it)")
    requires = ("replay", "der")
    requires_why = ("bic fits its correction on a held-out slice of the exemplar memory, so "
                    "it needs replay or der (e.g. 'bic+replay')")
    excludes = {"wa": "wa and bic both correct the head's bias; choose one"}
    state_key = "bias"

    def __init__(self, options, parts):
        super().__init__(options, parts)
        if not 0 < options.bic_holdout < 0.5:
            raise ValueError(f"bic_holdout must be in (0, 0.5), got {options.bic_holdout!r}")
        if options.bic_validation not in VALIDATIONS:
            raise ValueError(f"bic_validation must be one of {VALIDATIONS}, got "
                             f"{options.bic_validation!r}")
        self.holdout = options.bic_holdout
        self.holdout_beside = options.bic_validation == "beside"
        self.bias = BiasCorrection()
        self.keep: list[int] | None = None  # the positions of the task's data left to train on

    def before_task(self, run, t, train):
        # before anything trains (even a task that trains nothing)
        self.keep = run.memory.reserve(t, train[t], list(range(*run.plan.spans[t])))

    def train_data(self, run, t, train, data):
        return LabeledSubset(data, self.keep), 0

    def after_training(self, run, t, train):
        start, stop = run.plan.spans[t]
        if not start or (t == 0 and run.plan.skip_first):  # no older classes
            return
        logits, labels = run.outputs(union(run.memory.heldout_datasets(train)))
        self.bias.layers.append((start, stop, *fit_bias(self.bias(logits), labels, start, stop)))

    def scores(self, run, x):
        return self.bias(run.model(x).float())

    def state_dict(self):
        return self.bias.state_dict()

    def load_state_dict(self, state, device):
        self.bias.load_state_dict(state)
