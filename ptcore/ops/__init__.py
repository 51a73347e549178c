"""Typed functional API over the native ops (torch.ops.ptcore.*)."""
from ptcore.ops.cache_ops import gather_rows, quantize_rows
from ptcore.ops.checks import input_checks, set_input_checks
from ptcore.ops.kd_loss import kd_loss
from ptcore.ops.kd_loss_topk import kd_loss_topk
from ptcore.ops._row_signals import RowSignals
from ptcore.ops.fused_linear_kd import fused_linear_kd_loss

__all__ = ["kd_loss", "kd_loss_topk", "quantize_rows", "gather_rows", "set_input_checks",
           "input_checks", "fused_linear_kd_loss", "RowSignals"]
