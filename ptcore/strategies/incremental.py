"""Incremental: a pretrained (or fine-tuned) classifier learns a sequence of tasks, each
bringing new classes, and keeps what it knew.

Composes ptcore.models (head growth, freezing), ptcore.kd_loss (LwF), ptcore.FeatureCache
(the frozen snapshot's logits, computed once per task) and ptcore.engine (the loop, its
checkpoints and DDP). The pieces of each method live in the ``_incr_*`` modules beside this
one. See docs/incremental.md for the protocol and the measured results.
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from ptcore import engine
from ptcore.data import LabeledSubset, is_deterministic, targets_of
from ptcore.runtime import distributed as D
from ptcore.data.augment import BatchMix, soft_accuracy
from ptcore.runtime.rng import get_rng_state, set_rng_state
from ptcore.runtime.run_folder import TASK_STATES
from ptcore.models import (StagedModel, expand_head, get_head, get_heads, head_width,
                           replace_head, split_index, stages)
from ptcore.models import freeze as freeze_module
from ptcore.ops import kd_loss
from ptcore.strategies._incr_bias import BiasCorrection, fit_bias, weight_align
from ptcore.strategies._incr_der import LogitStore, Targets, der_loss
from ptcore.strategies._incr_ewc import EWC
from ptcore.strategies._incr_features import (Backbone, backbone_features, class_means,
                                              ncm_scores)
from ptcore.strategies._incr_memory import SELECTIONS, ExemplarMemory, union
from ptcore.strategies._incr_ranpac import RanPAC
from ptcore.strategies._incr_metrics import summarize
from ptcore.strategies._incr_plan import Plan, make_plan
from ptcore.strategies._param_groups import layer_decay_groups

__all__ = ["Incremental", "METHODS", "PRESETS", "PROTOCOLS", "parse_method"]

METHODS = ("naive", "lwf", "replay", "ewc", "ncm", "simplecil", "wa", "bic", "der", "ranpac")
# Named methods that are combinations of the parts above.
PRESETS = {"icarl": ("lwf", "replay", "ncm")}
PROTOCOLS = ("class", "task")


def parse_method(method: str) -> frozenset[str]:
    """The parts of a method such as "lwf+replay" ("naive" is the empty set; a preset
    such as "icarl" stands for its parts)."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str such as 'lwf+replay', got {type(method).__name__}")
    parts = [p.strip() for p in method.lower().split("+")]
    parts = [q for p in parts for q in PRESETS.get(p, (p,))]
    unknown = [p for p in parts if p not in METHODS]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(f"method {method!r}: parts must be distinct, from {METHODS} or the "
                         f"presets {tuple(PRESETS)}, joined by '+'")
    for alone in ("naive", "simplecil", "ranpac"):
        if alone in parts and len(parts) > 1:
            raise ValueError(f"method {method!r}: {alone!r} cannot be combined with anything")
    if "ncm" in parts and "replay" not in parts:
        raise ValueError(f"method {method!r}: ncm classifies by the means of the exemplars, so "
                         "it needs replay too (e.g. 'replay+ncm')")
    if "bic" in parts and not {"replay", "der"} & set(parts):
        raise ValueError(f"method {method!r}: bic fits its correction on a held-out slice of "
                         "the exemplar memory, so it needs replay or der (e.g. 'bic+replay')")
    if {"wa", "bic"} <= set(parts):
        raise ValueError(f"method {method!r}: wa and bic both correct the head's bias; "
                         "choose one")
    if "ncm" in parts and {"wa", "bic"} & set(parts):
        raise ValueError(f"method {method!r}: ncm does not use the head, so there is no head "
                         "bias for wa or bic to correct")
    return frozenset(parts) - {"naive"}


class _WithTeacher(Dataset):
    """Items ``(x, y, teacher_logits)``: a dataset beside a FeatureCache of its teacher."""

    def __init__(self, data, cache):
        self.data, self.cache = data, cache

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        logits = self.cache.get(indices, device="cpu")
        return [(*self.data[i], t) for i, t in zip(indices, logits)]


class Incremental:
    """Learn tasks one after another with ``model`` (a registered torchvision classifier).

    method: "naive" (plain fine-tuning), or parts joined by "+": "lwf" (distil the old
    classes' logits of a frozen snapshot of the previous model, ``temperature``,
    ``lwf_weight``), "replay" (``memory`` exemplars in all, class-balanced, chosen by
    ``selection``: "herding" or "random"), "ewc" (online diagonal-Fisher penalty,
    ``ewc_lambda``, ``ewc_decay``; the Fisher from at most ``ewc_samples`` samples per
    task), "ncm" (with replay: classify by the nearest mean of
    exemplars, iCaRL); "wa" (after each task, scale the new classes' head rows to the old
    rows' mean norm); "bic" (with a memory: fit α·z + β on the new classes' logits over a
    held-out share ``bic_holdout`` of the memory, never trained on); "der" (store the
    model's logits beside each exemplar and replay them, weight ``der_weight``: MSE of
    float16 logits, or with ``der_topk`` the KD loss on the top-k; "der" alone replays the
    exemplars through their logits only, "der+replay" through labels too: DER++); or alone
    "simplecil" (frozen backbone, class-mean prototypes) or "ranpac" (frozen backbone,
    ``ranpac_dim`` random ReLU features, closed-form ridge classifier, ``ranpac_ridge``).
    "icarl" is the preset "lwf+replay+ncm" (herding selection).
    protocol: "class" (one growing head, all seen classes compete) or "task" (the task id is
    known: training and the headline metrics use only the task's own rows). Both accuracy
    matrices are measured either way.
    classes: the classes the model's head already holds, in row order (e.g. after
    fine-tuning on the first task, whose training is then skipped); None: the head is sized
    for the first task. freeze: a split point (e.g. "layer2") frozen throughout.
    mixup/cutmix: MixUp/CutMix alphas on each training batch (class protocol; not with der,
    simplecil, ranpac); LwF's snapshot then runs on the mixed batch instead of a cache.
    The rest go to :func:`ptcore.engine.fit` for every task (AdamW with ``lr``; e.g.
    ``precise_bn`` re-estimates BatchNorm statistics after each epoch).
    """

    def __init__(self, model: nn.Module, *, method: str = "naive", protocol: str = "class",
                 classes: list[int] | None = None, memory: int = 200,
                 selection: str = "herding", temperature: float = 2.0,
                 lwf_weight: float = 1.0, ewc_lambda: float = 1000.0, ewc_decay: float = 1.0,
                 ewc_samples: int | None = 200, bic_holdout: float = 0.1,
                 der_weight: float = 0.1, der_topk: int | None = None,
                 ranpac_dim: int = 1024, ranpac_ridge: float = 1.0,
                 freeze: str | None = None, lr: float = 1e-3, weight_decay: float = 0.0,
                 epochs: int = 5, batch_size: int = 32, schedule: str = "cosine",
                 warmup: float = 0.0, accumulate: int = 1, amp="auto",
                 grad_clip: float | None = None, cache: bool = True, seed: int = 0, device=None,
                 progress: bool = True, num_workers: int | str = 0, precise_bn: int = 0,
                 label_smoothing: float = 0.0, optimizer: str = "adamw", momentum: float = 0.9,
                 nesterov: bool = False, mixup: float | None = None,
                 cutmix: float | None = None, **run_options):
        self.parts = parse_method(method)
        self.method = method.lower()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if classes is not None and (
                not isinstance(classes, (list, tuple)) or len(set(classes)) != len(classes)
                or not all(isinstance(c, int) and c >= 0 for c in classes)):
            raise TypeError(f"classes must be a list of distinct non-negative ints, got "
                            f"{classes!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not lwf_weight >= 0:
            raise ValueError(f"lwf_weight must be >= 0, got {lwf_weight!r}")
        self.model = StagedModel(model)
        self.protocol, self.initial_classes = protocol, None if classes is None else list(classes)
        self.temperature, self.lwf_weight = float(temperature), float(lwf_weight)
        if "icarl" in self.method.split("+") and selection != "herding":
            raise ValueError("icarl chooses its exemplars by herding; selection must be "
                             f"'herding', got {selection!r}")
        if "bic" in self.parts and not 0 < bic_holdout < 0.5:
            raise ValueError(f"bic_holdout must be in (0, 0.5), got {bic_holdout!r}")
        if not der_weight >= 0:
            raise ValueError(f"der_weight must be >= 0, got {der_weight!r}")
        self.der_weight = float(der_weight)
        self.memory = (ExemplarMemory(memory, selection, seed,
                                      bic_holdout if "bic" in self.parts else 0.0)
                       if self.parts & {"replay", "der"} else None)
        self.logits = LogitStore(der_topk) if "der" in self.parts else None
        self.bias = BiasCorrection() if "bic" in self.parts else None
        self.ranpac = RanPAC(ranpac_dim, ranpac_ridge, seed) if "ranpac" in self.parts else None
        self.ewc = (EWC(ewc_lambda, ewc_decay, samples=ewc_samples, seed=seed)
                    if "ewc" in self.parts else None)
        if freeze is not None:
            freeze_module(nn.ModuleList(
                s.module for s in stages(self.model)[:split_index(self.model, freeze)]))
        self.lr, self.weight_decay, self.cache, self.seed = lr, weight_decay, cache, seed
        engine.check_optimizer(optimizer, momentum, nesterov)
        self.optim = dict(optimizer=optimizer, momentum=momentum, nesterov=nesterov)
        self.label_smoothing = engine.check_label_smoothing(label_smoothing)
        self.mix = BatchMix(mixup, cutmix)
        if self.mix and (protocol == "task" or self.parts & {"der", "simplecil", "ranpac"}):
            raise ValueError("mixup/cutmix mix the samples of the class protocol's one head: "
                             "not with protocol='task' (a sample's rows are its own task's), "
                             "der (its stored logits belong to the unmixed exemplars), "
                             "simplecil or ranpac (they train nothing)")
        self.device = D.resolve_device(device)
        self.fit_args = dict(epochs=epochs, batch_size=batch_size, schedule=schedule,
                             warmup=warmup, accumulate=accumulate, amp=amp,
                             grad_clip=grad_clip, progress=progress,
                             num_workers=num_workers, precise_bn=precise_bn,
                             **engine.run_options(run_options, has_val=False))
        self.plan: Plan | None = None
        self.means: torch.Tensor | None = None  # class means (ncm, simplecil), head-row order
        self.R: dict[str, list[list[float | None]]] = {"class": [], "task": []}
        self.history: list[list[dict]] = []

    # -- the loss ------------------------------------------------------------------------
    def _restrict(self, logits: torch.Tensor, y: torch.Tensor, row_task: torch.Tensor):
        """Task protocol: each sample sees only its own task's rows (a multi-head model)."""
        if self.protocol == "class":
            return logits
        same = row_task[: logits.shape[1]][None, :] == row_task[y][:, None]
        return logits.masked_fill(~same, float("-inf"))

    def _kd_groups(self, t: int) -> list[tuple[int, int]]:
        """Row ranges distilled separately: all old rows together in the class protocol,
        each old task's rows on their own (LwF's old heads) in the task protocol."""
        n_old = self.plan.spans[t][0]
        if not n_old:
            return []
        if self.protocol == "class":
            return [(0, n_old)]
        before = [(0, self.plan.spans[0][0])] if self.plan.spans[0][0] else []
        return before + self.plan.spans[:t]

    def _step_fn(self, groups, teacher):
        row_task = self.plan.row_task().to(self.device)
        der = self.logits is not None
        rows = head_width(get_head(self.model))

        def step(model, batch):
            x, y, *cached = batch
            if der:
                stored, width, *cached = cached
            target = y
            if self.mix:  # class protocol without DER: the loss below takes soft targets
                x, target = self.mix(x, y, rows)
            logits = model(x).float()
            restricted = self._restrict(logits, y, row_task)
            if der and "replay" not in self.parts:  # DER: exemplars learn from logits only
                new = width == 0
                loss = (F.cross_entropy(restricted[new], y[new], reduction="sum",
                                        label_smoothing=self.label_smoothing)
                        / new.sum().clamp_min(1))
            else:
                loss = F.cross_entropy(restricted, target, label_smoothing=self.label_smoothing)
            out = {"accuracy": soft_accuracy(logits, target)}
            if der:
                replayed = der_loss(logits, stored, width, topk=self.logits.topk,
                                    temperature=self.temperature)
                loss = loss + self.der_weight * replayed
                out["der"] = replayed.detach()
            if groups:
                if cached:
                    old = cached[0]
                else:
                    with torch.no_grad():
                        old = teacher(x)
                kd = sum(kd_loss(logits[:, a:b].contiguous(), old[:, a:b].float().contiguous(),
                                 temperature=self.temperature) for a, b in groups) / len(groups)
                loss = loss + self.lwf_weight * kd
                out["kd"] = kd.detach()
            if self.ewc is not None:
                penalty = self.ewc.penalty(self.model)
                loss = loss + penalty
                out["ewc"] = penalty.detach()
            return {"loss": loss, **out}

        return step

    # -- one task ------------------------------------------------------------------------
    def _learn(self, t: int, train: list, out_dir, resume: bool) -> list[dict]:
        """Grow the head and train on task ``t`` (its data plus the exemplars)."""
        groups = self._kd_groups(t) if "lwf" in self.parts else []
        teacher = freeze_module(copy.deepcopy(self.model.model)) if groups else None
        stop = self.plan.spans[t][1]
        if t == 0 and self.initial_classes is None:
            replace_head(self.model.model, stop)
        elif stop > head_width(get_head(self.model)):
            expand_head(self.model.model, stop - head_width(get_head(self.model)))
        self.model.to(self.device)
        own = train[t]
        if self.memory is not None and self.memory.holdout:  # BiC: before anything trains
            own = LabeledSubset(own, self.memory.reserve(t, own, list(range(*self.plan.spans[t]))))
        if self.parts & {"simplecil", "ranpac"} or (t == 0 and self.plan.skip_first):
            return []
        if self.logits is not None:
            size = len(self.plan.classes) if self.logits.topk is None else 2 * self.logits.topk
            parts = [Targets(own, torch.zeros(len(own), size), torch.zeros(len(own),
                                                                           dtype=torch.long))]
            if self.logits.stored:
                parts.append(self.logits.dataset(self.memory, train, size))
        else:
            parts = [own] + (self.memory.datasets(train) if self.memory is not None else [])
        data = union(parts)
        # Mixed batches: the teacher sees the mixed inputs, so it runs online on them.
        if teacher is not None and self.cache and is_deterministic(data) and not self.mix:
            from ptcore.cache import FeatureCache

            data = _WithTeacher(data, FeatureCache(
                teacher, data, dtype=torch.float32, device=self.device,
                progress=self.fit_args["progress"],
                num_workers=self.fit_args["num_workers"]).build())
        optimizer = engine.make_optimizer(layer_decay_groups(self.model, self.lr, 1.0,
                                                             self.weight_decay), **self.optim)
        history = engine.fit(self.model, data, optimizer, step_fn=self._step_fn(groups, teacher),
                             out_dir=out_dir, resume=resume, device=self.device,
                             seed=self.seed + t, meta={"task": t, "method": self.method},
                             **self.fit_args)
        # DDP syncs buffers from rank 0 before each forward, so after the last step every
        # rank holds its own BatchNorm statistics: agree on rank 0's before anything else.
        if D.is_distributed():
            for b in self.model.buffers():
                torch.distributed.broadcast(b, src=0)
        return history

    def _consolidate(self, t: int, train: list) -> None:
        """After task ``t``: correct the head's bias, choose its exemplars (and store their
        logits), add its Fisher, update the class means or the RanPAC classifier."""
        rows = list(range(*self.plan.spans[t]))
        start, stop = self.plan.spans[t]
        if start and not (t == 0 and self.plan.skip_first):  # there are older classes
            if "wa" in self.parts:
                for head in get_heads(self.model):  # each classifier of a distilled ViT
                    weight_align(head, start, stop)
            if self.bias is not None:
                logits, labels = self._outputs(union(self.memory.heldout_datasets(train)))
                self.bias.layers.append((start, stop, *fit_bias(self.bias(logits), labels,
                                                                start, stop)))
        if self.memory is not None:
            self.memory.add(self.model, t, train[t], rows, device=self.device,
                            num_workers=self.fit_args["num_workers"])
            if self.logits is not None:
                self.logits.add(self.model, self.memory, train, rows, device=self.device,
                                progress=self.fit_args["progress"])
                self.logits.sync(self.memory)
        if self.ewc is not None and t < len(train) - 1:  # no task follows the last one
            row_task = self.plan.row_task().to(self.device)
            self.ewc.update(self.model, train[t],
                            lambda z, y: F.cross_entropy(self._restrict(z, y, row_task), y),
                            device=self.device, progress=self.fit_args["progress"],
                            num_workers=self.fit_args["num_workers"])
        if "ncm" in self.parts:  # every class's mean moves with the backbone: recompute all
            self.means = class_means(self.model, union(self.memory.datasets(train)),
                                     list(range(self.plan.spans[t][1])), device=self.device,
                                     num_workers=self.fit_args["num_workers"])
        elif "simplecil" in self.parts:  # the backbone is frozen: old prototypes stay valid
            new = class_means(self.model, train[t], rows, device=self.device,
                              num_workers=self.fit_args["num_workers"])
            self.means = new if self.means is None else torch.cat([self.means, new])
        elif self.ranpac is not None:  # frozen backbone: each sample's features once
            from ptcore.cache import FeatureCache

            cache = FeatureCache(Backbone(self.model), train[t], dtype=torch.float32,
                                 device=self.device, shard=True,
                                 progress=self.fit_args["progress"]).build()
            self.ranpac.update(cache.get(slice(None)), cache.labels, stop)

    def _outputs(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, C], labels [N]) of ``data`` in eval mode."""
        from ptcore.cache.build import inference

        logits, labels = [], []
        with inference(self.model):
            for x, y in engine.make_loader(data, 256, num_workers=self.fit_args["num_workers"],
                                           device=self.device):
                logits.append(self.model(x.to(self.device)).float())
                labels.append(y.to(self.device))
        return torch.cat(logits), torch.cat(labels)

    # -- evaluation ----------------------------------------------------------------------
    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.ranpac is not None:
            return self.ranpac.scores(backbone_features(self.model, x))
        if self.means is not None:
            return ncm_scores(self.model, x, self.means)
        logits = self.model(x)
        return logits if self.bias is None else self.bias(logits.float())

    @torch.no_grad()
    def _correct(self, data) -> torch.Tensor:
        """[3, tasks]: per task, the samples of ``data`` (labels = head rows) classified
        right among all classes learned so far (class-incremental), right among their own
        task's classes (task-incremental), and counted. One pass gives both protocols, which
        is why this is not engine.evaluate; under DDP each process takes every world-th
        sample and the counts are summed."""
        row_task = self.plan.row_task().to(self.device)
        n = head_width(get_head(self.model))
        amp = engine.resolve_amp(self.fit_args["amp"], self.device)
        counts = torch.zeros(3, len(self.plan.spans), dtype=torch.float64, device=self.device)
        was_training = self.model.training
        self.model.eval()
        shard = Subset(data, range(D.rank(), len(data), D.world_size()))
        for x, y in engine.make_loader(shard, 256, num_workers=self.fit_args["num_workers"],
                                       device=self.device):
            x, y = x.to(self.device), y.to(self.device)
            with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
                scores = self._scores(x).float()
            task = row_task[y]
            own = scores.masked_fill(row_task[None, :n] != task[:, None], float("-inf"))
            for i, right in enumerate((scores.argmax(-1) == y, own.argmax(-1) == y,
                                       torch.ones_like(y, dtype=torch.bool))):
                counts[i].index_add_(0, task, right.double())
        self.model.train(was_training)
        return D.all_sum(counts)

    def evaluate(self, data) -> dict:
        """Class- and task-incremental accuracy on ``data`` (labels are class ids, all of
        classes learned so far; the task of a sample is the one its class came with)."""
        if self.plan is None:
            raise RuntimeError("nothing learned yet: call fit() first")
        learned = self.plan.classes[: head_width(get_head(self.model))]
        unseen = sorted(set(targets_of(data).unique().tolist()) - set(learned))
        if unseen:
            raise ValueError(f"data has classes {unseen} that have not been learned yet")
        right_all, right_own, count = self._correct(self.plan.remap(data)).sum(1).tolist()
        return {"class_incremental": right_all / count, "task_incremental": right_own / count,
                "count": int(count)}

    def _record(self, t: int, test: list) -> None:
        right_all, right_own, count = self._correct(union(test[: t + 1])).tolist()
        for proto, right in (("class", right_all), ("task", right_own)):
            self.R[proto].append([right[k] / count[k] if k <= t else None
                                  for k in range(len(test))])

    # -- checkpoints ---------------------------------------------------------------------
    def _plan_record(self) -> dict:
        return {"method": self.method, "protocol": self.protocol,
                "classes": self.plan.classes, "tasks": self.plan.task_classes}

    def _save(self, out: engine.RunFolder, t: int) -> None:
        def save():
            engine.save_checkpoint(
                out.task(t).state, self.model.state_dict(), task=t,
                plan=self._plan_record(), R=self.R, history=self.history, means=self.means,
                rng=get_rng_state(),  # the next task's new head rows and batches
                **{name: part.state_dict() if part is not None else None
                   for name, part in self._parts_with_state().items()})
            # The task is done: its state supersedes the engine's mid-task checkpoint.
            out.task(t).checkpoint.unlink(missing_ok=True)

        # Every rank learns at once whether rank 0's write failed (not at the next collective).
        D.on_main(save, f"saving task {t}")

    def _restore(self, out: engine.RunFolder) -> int:
        """Load the state after the last finished task under ``out``; the next task's index."""
        done = D.on_main(lambda: [t for t in range(len(self.plan.spans))
                                  if out.task(t).state.is_file()], f"reading {out}")
        if not done:
            return 0
        t = done[-1]
        state = engine.load_checkpoint(out.task(t).state, from_main=True)
        if state["plan"] != self._plan_record():
            raise ValueError(f"{out} holds a run of {state['plan']}, not of "
                             f"{self._plan_record()}: resume with the same method and tasks")
        replace_head(self.model.model, self.plan.spans[t][1])
        self.model.load_state_dict(state["model"])
        self.model.to(self.device)
        self.R, self.history, self.means = state["R"], state["history"], state["means"]
        if self.means is not None:
            self.means = self.means.to(self.device)
        for name, part in self._parts_with_state().items():
            if part is not None and name != "ewc":
                part.load_state_dict(state[name])
        if self.ewc is not None:  # its tensors meet the parameters on the device
            self.ewc.load_state_dict({k: {n: v.to(self.device) for n, v in d.items()}
                                      for k, d in state["ewc"].items()})
        if "rng" in state:
            set_rng_state(state["rng"])
        return t + 1

    def _parts_with_state(self) -> dict:
        """What each method carries from task to task besides the model (in state.pt)."""
        return {"memory": self.memory, "ewc": self.ewc, "logits": self.logits,
                "bias": self.bias, "ranpac": self.ranpac}

    # -- the sequence --------------------------------------------------------------------
    def fit(self, train_tasks: list, test_tasks: list, *, out_dir=None,
            resume: bool = False) -> dict:
        """Learn ``train_tasks`` in order (datasets labelled with class ids, e.g. from
        :func:`ptcore.data.class_tasks`), measuring accuracy on ``test_tasks[k]`` for every
        task k learned so far after each one. With ``out_dir``: ``task_<t>/`` per task
        (the engine's checkpoint while it trains, ``state.pt`` once done), and at the end
        ``results.json``, ``accuracy_matrix.png``, ``accuracy_curve.png``, ``model.pt``.
        ``resume=True`` continues at the task and epoch where an interrupted run stopped.
        Returns the results (see docs/incremental.md)."""
        if resume and out_dir is None:
            raise ValueError("resume=True needs out_dir (where the checkpoints are)")
        self.plan = make_plan(train_tasks, test_tasks, self.initial_classes,
                              head_width(get_head(self.model)))
        if self.memory is not None and self.memory.budget < self.memory.min_budget(
                len(self.plan.classes)):
            raise ValueError(f"memory={self.memory.budget} is smaller than the "
                             f"{len(self.plan.classes)} classes need: replay needs at least one "
                             "exemplar per class (bic: and one held out)")
        if self.means is None and self.plan.spans[0][0] and self.parts & {"ncm", "simplecil",
                                                                          "ranpac"}:
            raise ValueError(f"{self.method} needs data of every class, but classes "
                             f"{self.plan.classes[:self.plan.spans[0][0]]} of the model's head "
                             "are in no task")
        if self.parts & {"simplecil", "ranpac"} and not all(map(is_deterministic, train_tasks)):
            raise ValueError(f"{self.method} trains nothing: its class prototypes come once from "
                             "the training data, which must be deterministic (augment 'none')")
        D.setup()  # before anything that reduces or broadcasts across processes
        self.model.to(self.device)
        train = [self.plan.remap(d) for d in train_tasks]
        test = [self.plan.remap(d) for d in test_tasks]
        out = engine.RunFolder.of(out_dir) if out_dir is not None else None
        if out is not None and not resume:
            out.refuse_another_run(TASK_STATES, what="incremental run")
        start = self._restore(out) if resume else 0
        began = time.perf_counter()
        for t in range(start, len(train)):
            task_dir = out.task(t) if out is not None else None
            # Only the first task left may have a mid-task checkpoint; later ones start.
            self.history.append(self._learn(t, train, task_dir, "auto" if resume else False))
            self._consolidate(t, train)
            self._record(t, test)
            if out is not None:
                self._save(out, t)
        results = self._results(time.perf_counter() - began)
        if out is not None:
            D.on_main(lambda: self._write(out, results), f"writing the results to {out}")
        return results

    def _results(self, seconds: float) -> dict:
        res = {"method": self.method, "protocol": self.protocol, "classes": self.plan.classes,
               "tasks": self.plan.task_classes, "train_seconds": seconds,
               "exemplars": len(self.memory) if self.memory is not None else 0,
               "history": self.history}
        for proto, R in self.R.items():
            res[f"{proto}_incremental"] = {"accuracy_matrix": R, **summarize(R)}
        res.update(res[f"{self.protocol}_incremental"])  # the protocol's own metrics on top
        return res

    def _write(self, out: engine.RunFolder, results: dict) -> None:
        from ptcore.report import accuracy_curve, accuracy_heatmap

        out.write_results(results)
        out.write_model(self.model.state_dict())
        names = [",".join(map(str, cs)) for cs in self.plan.task_classes]
        accuracy_heatmap(results["accuracy_matrix"], out.path / "accuracy_matrix.png",
                         task_labels=names, title=f"{self.method}, {self.protocol}-incremental: "
                         "accuracy on each task after each task")
        accuracy_curve({f"{p}-incremental": results[f"{p}_incremental"]["accuracy_after_task"]
                        for p in PROTOCOLS}, out.path / "accuracy_curve.png",
                       title=f"{self.method}: mean accuracy over the tasks seen so far")
