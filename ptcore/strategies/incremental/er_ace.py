"""Experience replay with asymmetric cross-entropy (ER-ACE, Caccia et al. 2022): the memory's
exemplars are replayed with the cross-entropy over every class seen, but the new data's
cross-entropy runs over only the classes present among the batch's new samples, so
learning the new classes does not push the old classes' logits down (the abrupt change of
the old representations that plain replay suffers at each task's start)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ptcore.strategies.incremental.memory import union
from ptcore.strategies.incremental.registry import Method, Term, register

__all__ = ["Marked", "ace_loss", "ERACE"]


class Marked(Dataset):
    """Items ``(x, y, replayed)``: ``data``'s samples with one flag for all of them."""

    def __init__(self, data, replayed: bool):
        self.data, self.replayed = data, torch.tensor(replayed)
        self.deterministic = getattr(data, "deterministic", False)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        return (*self.data[i], self.replayed)


def ace_loss(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0):
    """Mean cross-entropy of the rows of ``logits`` [n, C] over only the columns of the
    classes in ``y`` [n] (zero for no rows)."""
    if not len(y):
        return logits.sum() * 0.0
    present = torch.unique(y)  # sorted: a label's column is its position among them
    return F.cross_entropy(logits[:, present], torch.searchsorted(present, y),
                           label_smoothing=label_smoothing)


@register
class ERACE(Method):
    name = "er-ace"
    help = ("replay the exemplars with the cross-entropy over all classes, the new data with "
            "the cross-entropy over the batch's new classes only (memory, selection)")
    excludes = {"replay": "er-ace replays the memory itself: drop replay",
                "der": "er-ace and der each decide which samples learn from their labels"}
    uses_memory = True
    replays = True
    unmixed = "its new samples' loss spans only their own batch's classes"

    def train_data(self, run, t, train, data):
        return union([Marked(data, False)] + [Marked(d, True)
                                              for d in run.memory.datasets(train)]), 1

    def labelled(self, fields):  # the run's loss on the exemplars, this method's on the rest
        return fields[0]

    def loss_terms(self, run, step):
        new = ~step.fields[0]
        logits = run.restrict(step.logits, step.y, run.plan.row_task().to(step.y.device))
        return {"ace": Term(ace_loss(logits[new], step.y[new], run.label_smoothing))}
