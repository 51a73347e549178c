"""Learning-rate schedules as multiplicative factors (LambdaLR), so the ratios between
parameter groups (discriminative learning rates) hold at every step."""
from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR

__all__ = ["SCHEDULES", "schedule_factor", "make_schedule"]

SCHEDULES = ("constant", "cosine", "one_cycle", "slanted_triangular")


def schedule_factor(name: str, step: int, total: int, warmup: float = 0.1, *,
                    ratio: float = 32.0) -> float:
    """LR multiplier at optimizer step ``step`` of ``total``.

    constant: 1 (after linear warm-up). cosine: linear warm-up over a ``warmup`` fraction,
    then cosine to 0. one_cycle: cosine rise from 1/25 over ``warmup``, cosine fall to ~0.
    slanted_triangular (ULMFiT): linear rise over ``warmup`` (cut_frac), linear fall, from and
    to 1/``ratio``.
    """
    w = max(1, round(warmup * total)) if warmup > 0 else 0
    if name == "slanted_triangular":
        cut = max(1, w)
        p = step / cut if step < cut else 1 - (step - cut) / max(1, total - cut)
        return (1 + p * (ratio - 1)) / ratio
    if name == "one_cycle":
        if step < w:
            return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * step / w)) / 2
        return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * (step - w) / max(1, total - w))) / 2
    if step < w:
        return (step + 1) / (w + 1)
    if name == "constant":
        return 1.0
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")


def make_schedule(name: str, optimizer, total_steps: int, warmup: float = 0.1) -> LambdaLR:
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return LambdaLR(optimizer, lambda s: schedule_factor(name, s, total_steps, warmup))
