"""Freezing that also fixes BatchNorm and dropout.

A frozen module is a fixed function: no gradients, and it runs in eval mode (running
BatchNorm statistics, no dropout) even when the model around it is put in train mode. That
is what keeps BN statistics from drifting under a frozen backbone and what makes its outputs
cacheable. Eval mode is enforced by a forward pre-hook on each frozen submodule, so a later
``model.train()`` cannot undo it and the state survives deepcopy and pickling.
"""
from __future__ import annotations

import torch.nn as nn

__all__ = ["freeze", "unfreeze", "is_frozen", "set_bn_mode", "BN_MODES"]

BN_MODES = ("train", "eval", "frozen")


def _keep_eval(module: nn.Module, args) -> None:
    module.training = False


def _hold_eval(module: nn.Module) -> None:
    if _keep_eval not in module._forward_pre_hooks.values():
        module.register_forward_pre_hook(_keep_eval)
    module.training = False


def _release(module: nn.Module) -> None:
    for key in [k for k, h in module._forward_pre_hooks.items() if h is _keep_eval]:
        del module._forward_pre_hooks[key]


def freeze(module: nn.Module) -> nn.Module:
    """No gradients and eval mode for ``module`` and everything inside it."""
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        _hold_eval(m)
    return module


def unfreeze(module: nn.Module, *, bn: str = "train") -> nn.Module:
    """Make ``module`` trainable again, with BatchNorm layers in mode ``bn``
    (see :func:`set_bn_mode`). The caller sets train/eval mode as usual."""
    for m in module.modules():
        _release(m)
    for p in module.parameters():
        p.requires_grad_(True)
    return set_bn_mode(module, bn)


def is_frozen(module: nn.Module) -> bool:
    return _keep_eval in module._forward_pre_hooks.values()


def set_bn_mode(module: nn.Module, bn: str) -> nn.Module:
    """BatchNorm layers of a trainable ``module``: "train" (batch statistics, running stats
    update, affine trains), "eval" (running statistics fixed, affine trains) or "frozen"
    (running statistics and affine both fixed)."""
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if bn == "train":
                _release(m)
            else:
                _hold_eval(m)
            for p in m.parameters():
                p.requires_grad_(bn != "frozen")
    return module
