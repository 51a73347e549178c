"""Typed functional API over the native ops (torch.ops.ptcore.*)."""
from ptcore.ops.kd_loss import kd_loss

__all__ = ["kd_loss"]
from ptcore.ops.cache_ops import gather_rows, quantize_rows  # noqa: E402

__all__ += ["quantize_rows", "gather_rows"]
