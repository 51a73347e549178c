"""Argument handling shared by ptcore.kd_loss and its reference: checks, flattening of
leading dims, and the final reduction. One place, so both follow the same contract."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

REDUCTIONS = ("none", "sum", "batchmean", "mean")
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


class KDRows(NamedTuple):
    student: torch.Tensor        # [N, V]
    teacher: torch.Tensor        # [N, V]
    labels: torch.Tensor | None  # [N] int64
    lead_shape: torch.Size       # the leading dims of the input, restored for reduction="none"


def check_float(value, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonneg and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_hyper(temperature, reduction, divergence, beta, hard_weight, soft_weight, ignore_index):
    check_float(temperature, "temperature", positive=True)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    beta = check_float(beta, "beta")
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be strictly between 0 and 1, got {beta}")
    check_float(hard_weight, "hard_weight", nonneg=True)
    check_float(soft_weight, "soft_weight", nonneg=True)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")


def _check_logits(x, name: str, min_classes: int = 1) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] < min_classes:
        raise ValueError(f"{name} must have shape [..., V] with V >= {min_classes}, got "
                         f"{tuple(x.shape)}")


def flatten(student, teacher, labels, name_s="student_logits", name_t="teacher_logits") -> KDRows:
    """Check logits (and labels) against each other and flatten leading dims into rows."""
    _check_logits(student, name_s)
    _check_logits(teacher, name_t)
    if student.shape != teacher.shape:
        raise ValueError(f"{name_s} and {name_t} must have the same shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    if student.device != teacher.device:
        raise ValueError(f"{name_s} and {name_t} must be on the same device, got "
                         f"{student.device} and {teacher.device}")
    student, teacher = match_dtypes(student, teacher, name_s, name_t)
    lead = student.shape[:-1]
    V = student.shape[-1]
    if labels is not None:
        labels = check_labels(labels, lead, student.device)
    return KDRows(student.reshape(-1, V), teacher.reshape(-1, V), labels, lead)


def flatten_topk(student, values, indices, labels):
    """Checks for the top-k loss; returns [N, V] student, [N, K] values (in the student's
    float precision) and indices, [N] labels and the leading shape."""
    _check_logits(student, "student_logits")
    _check_logits(values, "teacher_values", min_classes=0)  # K = 0: a teacher that kept nothing
    if not isinstance(indices, torch.Tensor) or indices.dtype != torch.int64:
        raise TypeError("teacher_indices must be an int64 tensor, got "
                        f"{getattr(indices, 'dtype', type(indices).__name__)}")
    if values.shape != indices.shape:
        raise ValueError("teacher_values and teacher_indices must have the same shape, got "
                         f"{tuple(values.shape)} and {tuple(indices.shape)}")
    lead, V, K = student.shape[:-1], student.shape[-1], values.shape[-1]
    if values.shape[:-1] != lead:
        raise ValueError(f"teacher_values must have the student's leading shape {tuple(lead)}, "
                         f"got {tuple(values.shape[:-1])}")
    if K > V:
        raise ValueError(f"top-k teacher has K={K} classes but the student only V={V}")
    for name, x in (("teacher_values", values), ("teacher_indices", indices)):
        if x.device != student.device:
            raise ValueError(f"{name} must be on {student.device}, got {x.device}")
    acc = torch.float64 if student.dtype == torch.float64 else torch.float32
    if labels is not None:
        labels = check_labels(labels, lead, student.device)
    n = student.numel() // V
    return (student.reshape(n, V), values.reshape(n, K).to(acc), indices.reshape(n, K),
            labels, lead)


def match_dtypes(a, b, name_a, name_b):
    """Same dtype required; under autocast, mixed logits are promoted to the wider one."""
    if a.dtype == b.dtype:
        return a, b
    if torch.is_autocast_enabled(a.device.type):
        common = torch.promote_types(a.dtype, b.dtype)
        return a.to(common), b.to(common)
    raise TypeError(f"{name_a} and {name_b} must have the same dtype, got {a.dtype} and {b.dtype}")


def check_labels(labels, lead_shape, device) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.shape != lead_shape:
        raise ValueError(f"labels must have the logits' leading shape {tuple(lead_shape)}, "
                         f"got {tuple(labels.shape)}")
    if labels.device != device:
        raise ValueError(f"labels must be on {device}, got {labels.device}")
    return labels.reshape(-1).long()


def reduce_rows(rows, labels, ignore_index, reduction, V, lead_shape):
    """Reduce per-row losses [N] as torch.nn.KLDivLoss names it; ignored rows do not count."""
    if reduction == "none":
        return rows.reshape(lead_shape)
    total = rows.sum()
    if reduction == "sum":
        return total
    if labels is None:
        count = max(rows.shape[0], 1)
    else:
        count = (labels != ignore_index).sum().clamp_min(1)
    return total / (count * V) if reduction == "mean" else total / count
