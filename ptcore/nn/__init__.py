"""nn.Modules over ptcore.ops: they hold hyperparameters, the ops do the work."""
from ptcore.nn.fused_linear_kd import FusedLinearKDLoss
from ptcore.nn.kd_loss import KDLoss

__all__ = ["KDLoss", "FusedLinearKDLoss"]
