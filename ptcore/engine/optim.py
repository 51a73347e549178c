"""The training recipe a strategy takes from its options: the optimizer, by name: AdamW
(the default) or SGD with momentum (optionally Nesterov), over the strategy's parameter groups (their own ``lr`` and
``weight_decay``: layer-wise rates, no decay on norms and biases). Checked when the strategy
is built, before any training. Label smoothing is checked here too."""
from __future__ import annotations

import math

import torch

__all__ = ["OPTIMIZERS", "check_optimizer", "make_optimizer", "check_label_smoothing"]

OPTIMIZERS = ("adamw", "sgd")


def check_optimizer(optimizer: str, momentum, nesterov) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
            or not 0 <= momentum < 1 or not math.isfinite(momentum):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not isinstance(nesterov, bool):
        raise ValueError(f"nesterov must be true or false, got {nesterov!r}")
    if nesterov and (optimizer != "sgd" or momentum == 0):
        raise ValueError("nesterov needs optimizer='sgd' with momentum > 0")


def check_label_smoothing(eps) -> float:
    """``eps`` in [0, 1): the target puts 1 − eps on the label and eps spread evenly over
    all classes (torch's ``cross_entropy(label_smoothing=)``)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {eps!r}")
    return float(eps)


def make_optimizer(params, optimizer: str = "adamw", *, momentum: float = 0.9,
                   nesterov: bool = False, **defaults) -> torch.optim.Optimizer:
    """``params``: parameters or parameter groups; ``defaults`` (lr, weight_decay) apply
    where a group gives none. ``momentum``/``nesterov`` are SGD's (AdamW has its betas)."""
    check_optimizer(optimizer, momentum, nesterov)
    if optimizer == "sgd":
        return torch.optim.SGD(params, momentum=momentum, nesterov=nesterov, **defaults)
    return torch.optim.AdamW(params, **defaults)
