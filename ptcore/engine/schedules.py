"""Learning-rate schedules, stepped once per optimizer step, built from
``torch.optim.lr_scheduler``. Every one scales each parameter group by the same factor, so
the ratios between groups (discriminative learning rates) hold at every step.

With ``w = round(warmup · total)`` warm-up steps (at least 1 when ``warmup > 0``):

* constant: linear warm-up from ``1/(w+1)`` to 1 (``LinearLR``), then 1.
* cosine: the same warm-up, then cosine to 0 at step ``total``
  (``SequentialLR`` of ``LinearLR`` and ``CosineAnnealingLR``).
* slanted_triangular (ULMFiT, Howard & Ruder 2018): linear rise from ``1/32`` to 1 over
  ``max(1, w)`` steps (``cut_frac = warmup``), linear fall back to ``1/32`` at ``total``
  (``SequentialLR`` of two ``LinearLR``).
* one_cycle: cosine rise from ``1/25`` over ``w`` steps, cosine fall to ``1e-4`` at
  ``total``. Hand-written (``LambdaLR``), because ``OneCycleLR`` cannot serve it: it divides
  by zero when ``warmup · total`` is one step (measured with torch 2.14: total 10, warmup
  0.1 raises ZeroDivisionError at construction), peaks at the fractional step
  ``warmup · total − 1``, starts below the peak without warm-up (0.976 of it at step 0 of 10)
  and rises again at step ``total`` (the rate an epoch record shows last); and
  ``CosineAnnealingLR`` cannot rise from, or fall to, a floor proportional to each group's
  rate (its ``eta_min`` is one absolute rate for all groups).

torch's ``LinearLR`` and ``CosineAnnealingLR`` step in chained form (each rate is the last one
times a ratio), which drifts from the closed forms above by rounding only: at most 1.0e-12
relative over 10⁵ steps (measured, slanted_triangular; 4.4e-14 for cosine), and
tests/engine/test_schedules_and_checkpoints.py compares every step of shorter runs.

On resume, :func:`resume_schedule` loads the scheduler's state when the run has the same
number of steps; when it has more (``epochs`` grew), it follows the longer schedule from the
step reached, as a run made that long from the start would.
"""
from __future__ import annotations

import math
import warnings
from functools import partial

from torch.optim.lr_scheduler import (CosineAnnealingLR, LambdaLR, LinearLR, LRScheduler,
                                      SequentialLR)

__all__ = ["SCHEDULES", "warmup_steps", "make_schedule", "resume_schedule"]

SCHEDULES = ("constant", "cosine", "one_cycle", "slanted_triangular")
STLR_RATIO = 32.0  # ULMFiT's ratio between the peak and the lowest rate
ONE_CYCLE_START, ONE_CYCLE_END = 1 / 25, 1e-4


def warmup_steps(total: int, warmup: float) -> int:
    """Steps of warm-up: ``warmup`` as a fraction of ``total``, at least 1 when above 0."""
    return max(1, round(warmup * total)) if warmup > 0 else 0


def _one_cycle(step: int, *, total: int, w: int) -> float:
    def cos_ramp(lo, hi, p):  # lo at p = 0, hi at p = 1
        return lo + (hi - lo) * (1 - math.cos(math.pi * p)) / 2

    if step < w:
        return cos_ramp(ONE_CYCLE_START, 1.0, step / w)
    return cos_ramp(1.0, ONE_CYCLE_END, (step - w) / max(1, total - w))


def make_schedule(name: str, optimizer, total_steps: int, warmup: float = 0.1) -> LRScheduler:
    """The scheduler for ``total_steps`` optimizer steps (see the module docstring)."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    w = warmup_steps(total_steps, warmup)
    if name == "one_cycle":
        return LambdaLR(optimizer, partial(_one_cycle, total=total_steps, w=w))
    if name == "slanted_triangular":
        w = max(1, w)
        phases = [LinearLR(optimizer, 1 / STLR_RATIO, 1.0, total_iters=w),
                  LinearLR(optimizer, 1.0, 1 / STLR_RATIO, total_iters=max(1, total_steps - w))]
    else:
        # total_iters=0 with start 1 is the identity: "constant" without warm-up.
        phases = [LinearLR(optimizer, 1 / (w + 1), 1.0, total_iters=w)]
        if name == "cosine":
            phases = phases[:bool(w)] + [CosineAnnealingLR(optimizer, max(1, total_steps - w))]
    if len(phases) == 1:
        return phases[0]
    return SequentialLR(optimizer, phases, milestones=[w])


def resume_schedule(scheduler: LRScheduler, optimizer, state: dict, same_length: bool) -> None:
    """Continue ``scheduler`` (fresh, built before ``optimizer``'s state was loaded) from a
    checkpoint's scheduler ``state``. ``same_length``: the checkpoint's run had as many
    steps as this one; then the state is loaded exactly. Otherwise (more epochs, or a
    checkpoint whose scheduler has another form) the new schedule is stepped to the step
    reached and the optimizer's rates are set from it."""
    if same_length:
        scheduler.load_state_dict(state)
        return
    # The chained schedulers step from the rates they set at step 0.
    for g, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
        g["lr"] = lr
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()"
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(state["last_epoch"]):
            scheduler.step()
