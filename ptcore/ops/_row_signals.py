"""Per-row signals of the KD losses: the teacher's and the student's confidence and the
row's divergence, read from the statistics the row kernels keep for the backward anyway
([N, 7], csrc/kd_math.h: enum Stat), so that a caller gets them without another pass over
the [N, V] logits."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["RowSignals", "from_stats"]

# Columns of the kernels' statistics (csrc/kd_math.h: kLogZS, kLogZT, kDiv).
_LOG_Z_S, _LOG_Z_T, _DIV = 1, 3, 5


class RowSignals(NamedTuple):
    """Per-row by-products of the loss's forward (shape: the rows' leading dims, float32,
    no gradient), at the loss's temperature T: the teacher's and the student's top
    probability of softmax(· / T) (for a top-k teacher, over its K kept classes, plus the
    tail bin with ``tail_bucket``), and the row's divergence D(p_t, p_s) before weights and
    T². For ``divergence="jsd"`` that is its student half KL(p_s ‖ m), m = βp_t + (1-β)p_s,
    the term the kernel keeps for the backward (the whole JSD would take another pass)."""
    teacher_confidence: torch.Tensor
    student_confidence: torch.Tensor
    divergence: torch.Tensor


def from_stats(stats: torch.Tensor, lead: torch.Size) -> RowSignals:
    """The signals of the rows whose statistics are ``stats`` [N, 7]: each log-normaliser
    is taken relative to the row's maximum, so exp(-log z) is the top probability (0 for a
    top-k teacher that kept no class: its log z is -inf)."""
    log_zt = stats[:, _LOG_Z_T]
    teacher = torch.where(log_zt == -math.inf, 0.0, (-log_zt).exp())
    return RowSignals(teacher.reshape(lead), (-stats[:, _LOG_Z_S]).exp().reshape(lead),
                      stats[:, _DIV].reshape(lead))
