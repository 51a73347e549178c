"""Pure-PyTorch definitions of every ptcore op: the specification that the native
kernels are tested and benchmarked against, and the fallback when they cannot load.

They favour clarity and numerical safety over speed (float32 math, N×V temporaries)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ptcore import _kd_args

__all__ = ["kd_loss", "kd_loss_rows"]


def _log_softmax(x: torch.Tensor, temperature: float) -> torch.Tensor:
    # Subtract the row max before dividing by T: x/T alone overflows for |x| ~ 3e38, T < 1.
    shifted = x - x.amax(dim=-1, keepdim=True).detach()
    return torch.log_softmax(shifted / temperature, dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, with 0 · log 0 = 0 (masked entries contribute nothing)."""
    has_mass = log_p > -math.inf
    diff = torch.where(has_mass, log_p - log_q, torch.zeros_like(log_p))
    return (log_p.exp() * diff).sum(dim=-1)


def kd_loss_rows(student, teacher, labels, temperature, divergence, beta, hard_weight,
                 soft_weight, ignore_index, scale_by_t2):
    """Per-row loss [N] (float32) for [N, V] logits; see ptcore.ops.kd_loss for the maths."""
    acc = torch.float64 if student.dtype == torch.float64 else torch.float32
    s = student.to(acc)
    t = teacher.detach().to(acc)
    log_ps = _log_softmax(s, temperature)
    log_pt = _log_softmax(t, temperature)
    if divergence == "forward_kl":
        div = _kl(log_pt, log_ps)
    elif divergence == "reverse_kl":
        div = _kl(log_ps, log_pt)
    else:
        m = beta * log_pt.exp() + (1.0 - beta) * log_ps.exp()
        log_m = torch.log(torch.where(m > 0, m, torch.ones_like(m)))
        div = beta * _kl(log_pt, log_m) + (1.0 - beta) * _kl(log_ps, log_m)
    loss = soft_weight * (temperature ** 2 if scale_by_t2 else 1.0) * div
    if labels is not None:
        valid = labels != ignore_index
        V = s.shape[-1]
        bad = valid & ((labels < 0) | (labels >= V))
        if bool(bad.any()):
            raise ValueError(f"labels must be in [0, {V}) or ignore_index={ignore_index}, got "
                             f"{labels[bad][0].item()}")
        if hard_weight != 0.0:
            ce = F.cross_entropy(s, labels.masked_fill(~valid, 0), reduction="none")
            loss = loss + hard_weight * ce
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    return loss.to(acc if acc == torch.float64 else torch.float32)


def kd_loss(student_logits, teacher_logits, *, temperature=1.0, reduction="batchmean",
            divergence="forward_kl", beta=0.5, labels=None, hard_weight=0.0, soft_weight=1.0,
            ignore_index=-100, scale_by_t2=True):
    """Reference for ptcore.kd_loss: same signature, same results, plain PyTorch."""
    _kd_args.check_hyper(temperature, reduction, divergence, beta, hard_weight, soft_weight,
                         ignore_index)
    s, t, lab, lead = _kd_args.flatten(student_logits, teacher_logits, labels)
    rows = kd_loss_rows(s, t, lab, float(temperature), divergence, float(beta),
                        float(hard_weight), float(soft_weight), ignore_index, bool(scale_by_t2))
    return _kd_args.reduce_rows(rows, lab, ignore_index, reduction, s.shape[-1], lead)
