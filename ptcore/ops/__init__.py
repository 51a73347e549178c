"""Typed functional API over the native ops (torch.ops.ptcore.*)."""
from ptcore.ops.kd_loss import kd_loss

__all__ = ["kd_loss"]
