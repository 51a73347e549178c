"""nn.Modules over ptcore.ops: they hold hyperparameters, the ops do the work."""
from ptcore.nn.kd_loss import KDLoss

__all__ = ["KDLoss"]
