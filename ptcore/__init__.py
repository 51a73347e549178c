"""ptcore: adapt pretrained PyTorch models by fine-tuning, incremental training and
knowledge distillation, on fused native kernels (C++ for CPU, CUDA for NVIDIA GPUs)."""
from __future__ import annotations

import importlib

from ptcore._version import __version__
from ptcore._extension import build_info, has_cuda_kernels, has_native, info  # noqa: E402
from ptcore import ops, reference  # noqa: E402
from ptcore import nn  # noqa: E402
from ptcore.ops import (fused_linear_kd_loss, input_checks, kd_loss, kd_loss_topk,  # noqa: E402
                        set_input_checks)  # noqa: E402

__all__ = [
    "__version__", "info", "build_info", "has_native", "has_cuda_kernels",
    "ops", "nn", "reference", "kd_loss", "kd_loss_topk", "fused_linear_kd_loss", "FeatureCache",
    "set_input_checks",
    "input_checks", "seed_everything",
]

# Heavier parts (torchvision, training code) load on first use, keeping `import ptcore` quick.
_LAZY_MODULES = {"cache", "models", "data", "engine", "strategies", "report", "cli"}
_LAZY_ATTRS = {"FeatureCache": "ptcore.cache", "seed_everything": "ptcore.runtime.rng"}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"ptcore.{name}")
    if name in _LAZY_ATTRS:
        return getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
    raise AttributeError(f"module 'ptcore' has no attribute {name!r}")
