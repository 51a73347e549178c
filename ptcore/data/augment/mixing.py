"""MixUp and CutMix of a training batch (torchvision.transforms.v2), and the loss and
accuracy of a classification step on the soft targets they produce.

The draws (MixUp's and CutMix's Beta(α, α) ratio, CutMix's box, the choice between them)
come from torch's global generator, which checkpoints save and resume restores
(:mod:`ptcore.runtime.rng`), so a resumed run mixes exactly as an uninterrupted one. Each
sample is mixed with its predecessor in the batch (torchvision's pairing); the loop's
sampler shuffles, so the pairs are random.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["check_mixing", "BatchMix", "soft_accuracy", "soft_classification"]


def check_mixing(mixup, cutmix) -> tuple[float, float]:
    """(mixup, cutmix) as floats, 0 for off (None or 0); each alpha a finite number >= 0."""
    out = []
    for name, alpha in (("mixup", mixup), ("cutmix", cutmix)):
        alpha = 0.0 if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"{name} must be null/0 (off) or a finite alpha > 0 (e.g. 0.2 "
                             f"for MixUp, 1.0 for CutMix), got {alpha!r}")
        out.append(float(alpha))
    return out[0], out[1]


class BatchMix:
    """``mix(x, y, num_classes) -> (x', soft targets [B, num_classes])``: MixUp with
    ``mixup`` alpha, CutMix with ``cutmix`` alpha, one of the two at random per batch when
    both are on. False (and not to be called) when both are off."""

    def __init__(self, mixup=None, cutmix=None):
        self.mixup, self.cutmix = check_mixing(mixup, cutmix)

    def __bool__(self) -> bool:
        return bool(self.mixup or self.cutmix)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int):
        from torchvision.transforms import v2

        if bool(((y < 0) | (y >= num_classes)).any()):  # one check, one host sync
            raise ValueError("MixUp/CutMix need a class label in [0, num_classes) for every "
                             "sample (no ignored or unlabelled samples)")
        ops = ([v2.MixUp(alpha=self.mixup, num_classes=num_classes)] if self.mixup else []) \
            + ([v2.CutMix(alpha=self.cutmix, num_classes=num_classes)] if self.cutmix else [])
        mix = ops[0] if len(ops) == 1 else v2.RandomChoice(ops)
        return mix(x, y)


def soft_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The share of rows whose top logit is the target: the class id ``[B]``, or the
    largest share of mixed class probabilities ``[B, C]``."""
    hard = target if target.ndim == 1 else target.argmax(-1)
    return (logits.argmax(-1) == hard).float().mean()


def soft_classification(logits: torch.Tensor, target: torch.Tensor, *,
                        label_smoothing: float = 0.0) -> dict:
    """Cross-entropy of ``logits`` against class ids ``[B]`` or class probabilities
    ``[B, C]`` (mixed targets; ``label_smoothing`` then spreads over the classes as for
    ids: ``(1 - ε)·p + ε/C``), and the accuracy against the target's largest share."""
    logits = logits.float()
    return {"loss": F.cross_entropy(logits, target, label_smoothing=label_smoothing),
            "accuracy": soft_accuracy(logits, target)}
