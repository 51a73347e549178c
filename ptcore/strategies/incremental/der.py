"""Dark Experience Replay (DER, Buzzega et al. 2020): beside each exemplar, the model's
logits at the moment the exemplar was stored, replayed later with a logit-matching term.

The logits are computed by a :class:`ptcore.FeatureCache` pass over the new exemplars
(float16 rows, or the top-k logits and their class indices as the distillation strategy
stores them) and kept with the memory: the model that produced them is gone by the time
they are replayed, so they are part of the checkpoint rather than a rebuildable cache."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ptcore.data import LabeledSubset
from ptcore.models import get_head, head_width
from ptcore.ops import kd_loss_topk
from ptcore.strategies.distill.teacher import TeacherView
from ptcore.strategies.incremental.memory import union
from ptcore.strategies.incremental.registry import Method, Term, register

__all__ = ["LogitStore", "Targets", "der_loss", "DER"]


class Targets(Dataset):
    """Items ``(x, y, target, width)``: ``data``'s sample, its stored logits row (padded to a
    common size) and how many of its leading entries are real (0: none, new data)."""

    def __init__(self, data, targets: torch.Tensor, widths: torch.Tensor):
        self.data, self.targets, self.widths = data, targets, widths
        self.deterministic = getattr(data, "deterministic", False)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        return x, y, self.targets[i], self.widths[i]


class LogitStore:
    """Per head row, the stored logits of its exemplars in the memory's order: full logits
    in float16 (``topk`` None; width = head size at storing time) or float32 rows of the
    K largest logits then their indices (width as well: the classes that existed)."""

    def __init__(self, topk: int | None = None):
        if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
            raise ValueError(f"der_topk must be None or a positive int, got {topk!r}")
        self.topk = topk
        self.stored: dict[int, tuple[int, torch.Tensor]] = {}  # row -> (width, [n, R])

    def add(self, model, memory, task_data: list, rows: list[int], *, device,
            progress: bool = False) -> None:
        """Store the logits ``model`` gives now to the exemplars of ``rows``."""
        from ptcore.cache import FeatureCache

        entries = [(row, *memory.exemplars[row]) for row in rows]
        data = union([LabeledSubset(task_data[t], p) for _, t, p in entries])
        width = head_width(get_head(model))
        if self.topk is not None and self.topk > width:
            raise ValueError(f"der_topk={self.topk} is more than the head's {width} classes")
        cache = FeatureCache(TeacherView(model, topk=self.topk), data,
                             dtype=torch.float16 if self.topk is None else torch.float32,
                             device=device, progress=progress).build()
        out = cache.get(slice(None), out_dtype=cache.dtype, device="cpu")
        for (row, _, positions), block in zip(entries, out.split([len(p) for *_, p in entries])):
            self.stored[row] = (width, block)

    def sync(self, memory) -> None:
        """Drop the logits of exemplars the memory dropped (it keeps a prefix)."""
        for row, (width, block) in self.stored.items():
            self.stored[row] = (width, block[: len(memory.exemplars[row][1])])

    def dataset(self, memory, task_data: list, size: int) -> Targets:
        """The exemplars with their stored rows, padded to ``size`` columns (full logits)."""
        rows = sorted(self.stored)
        data = union([LabeledSubset(task_data[memory.exemplars[r][0]], memory.exemplars[r][1])
                        for r in rows])
        blocks = [self.stored[r][1].float() for r in rows]
        targets = torch.cat([torch.nn.functional.pad(b, (0, (size if self.topk is None
                                                             else b.shape[1]) - b.shape[1]))
                             for b in blocks])
        widths = torch.cat([torch.full((len(b),), self.stored[r][0]) for r, b in zip(rows, blocks)])
        return Targets(data, targets, widths)

    def state_dict(self) -> dict:
        return {"topk": self.topk, "stored": {r: [w, b] for r, (w, b) in self.stored.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["topk"] != self.topk:
            raise ValueError(f"the checkpoint's stored logits are top-{state['topk']}, not "
                             f"top-{self.topk}")
        self.stored = {int(r): (int(w), b) for r, (w, b) in state["stored"].items()}


def der_loss(logits: torch.Tensor, target: torch.Tensor, width: torch.Tensor, *,
             topk: int | None, temperature: float) -> torch.Tensor:
    """The logit-matching term over the batch's rows that have stored logits (width > 0),
    on the classes that existed when they were stored: mean squared error of the logits
    (DER), or with ``topk`` the KD loss against the stored top-k (``ptcore.kd_loss_topk``,
    the student's later classes masked out). Zero when no row has stored logits."""
    has = width > 0
    if not bool(has.any()):
        return logits.sum() * 0.0
    z, t, w = logits[has], target[has].float(), width[has].to(logits.device)
    known = torch.arange(z.shape[1], device=z.device)[None, :] < w[:, None]
    if topk is None:
        return ((z - t[:, : z.shape[1]]).pow(2) * known).sum() / known.sum()
    return kd_loss_topk(z.masked_fill(~known, float("-inf")), t[:, :topk].contiguous(),
                        t[:, topk:].long(), temperature=temperature)


@register
class DER(Method):
    name = "der"
    help = ("store the model's logits beside each exemplar and replay them (der_weight; "
            "der_topk: the top-k as KD targets); alone the exemplars learn from their logits "
            "only, der+replay from their labels too (DER++)")
    uses_memory = True
    replays = True
    unmixed = "its stored logits belong to the unmixed exemplars"
    state_key = "logits"

    def __init__(self, options, parts):
        super().__init__(options, parts)
        if not options.der_weight >= 0:
            raise ValueError(f"der_weight must be >= 0, got {options.der_weight!r}")
        self.weight, self.temperature = float(options.der_weight), float(options.temperature)
        self.logits = LogitStore(options.der_topk)

    def train_data(self, run, t, train, data):
        size = len(run.plan.classes) if self.logits.topk is None else 2 * self.logits.topk
        parts = [Targets(data, torch.zeros(len(data), size),
                         torch.zeros(len(data), dtype=torch.long))]
        if self.logits.stored:
            parts.append(self.logits.dataset(run.memory, train, size))
        return union(parts), 2

    def labelled(self, fields):
        # DER alone: the exemplars learn from their stored logits only
        return None if "replay" in self.parts else fields[1] == 0

    def loss_terms(self, run, step):
        stored, width = step.fields
        return {"der": Term(der_loss(step.logits, stored, width, topk=self.logits.topk,
                                     temperature=self.temperature), self.weight)}

    def after_task(self, run, t, train):
        rows = list(range(*run.plan.spans[t]))
        self.logits.add(run.model, run.memory, train, rows, device=run.device,
                        progress=run.fit_args["progress"])
        self.logits.sync(run.memory)

    def state_dict(self):
        return self.logits.state_dict()

    def load_state_dict(self, state, device):
        self.logits.load_state_dict(state)
