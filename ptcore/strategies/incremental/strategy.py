"""Incremental: a pretrained (or fine-tuned) classifier learns a sequence of tasks, each
bringing new classes, and keeps what it knew.

Composes ptcore.models (head growth, freezing), ptcore.FeatureCache and ptcore.engine (the
loop, its checkpoints and DDP). What a method adds lives in its own module beside this one,
behind the hooks of registry.py; this class runs the sequence and calls them. See
docs/incremental.md for the protocol and the measured results.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Subset

from ptcore import engine
from ptcore.data import is_deterministic, targets_of
from ptcore.data.augment import BatchMix, soft_accuracy
from ptcore.models import (StagedModel, expand_head, get_head, head_width, replace_head,
                           split_index, stages)
from ptcore.models import freeze as freeze_module
from ptcore.runtime import distributed as D
from ptcore.runtime.rng import get_rng_state, set_rng_state
from ptcore.runtime.run_folder import TASK_STATES
from ptcore.strategies._param_groups import layer_decay_groups
from ptcore.strategies.incremental.memory import SELECTIONS, ExemplarMemory, union
from ptcore.strategies.incremental.results import PROTOCOLS, run_results, write_plots
from ptcore.strategies.incremental.plan import Plan, make_plan
from ptcore.strategies.incremental.registry import (METHODS, Step, parse_method,
                                                    preset_options)
from ptcore.strategies.incremental.replay import check_schedule, training_data

__all__ = ["Incremental", "PROTOCOLS"]


class Incremental:
    """Learn tasks one after another with ``model`` (a registered torchvision classifier).

    method: a registered method or methods joined by "+" (:data:`METHODS`, e.g. "lwf+replay";
    "naive" is plain fine-tuning), or a preset such as "icarl" (:data:`PRESETS`); the help
    of each, with the arguments below that it reads, is ``method_help()``. Their arguments:
    ``temperature`` and ``lwf_weight`` (lwf), ``memory`` exemplars in all chosen by
    ``selection`` ("herding" or "random": replay, der), ``replay_schedule`` ("union" or
    "mixed" batches: replay, der, er-ace; replay.py), ``ewc_lambda``, ``ewc_decay``,
    ``ewc_samples`` (ewc), ``bic_holdout``, ``bic_validation`` (bic), ``der_weight``,
    ``der_topk`` (der), ``ranpac_dim``, ``ranpac_ridge`` (ranpac), ``agem_batch`` (a-gem),
    ``mas_lambda``, ``mas_samples`` (mas), ``aper_adapt`` (aper), ``l2p_pool``,
    ``l2p_top``, ``l2p_length`` (l2p); docs/incremental.md describes them all.
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
                 lwf_weight: float = 1.0, ewc_lambda: float = 10.0, ewc_decay: float = 1.0,
                 ewc_samples: int | None = 200, bic_holdout: float = 0.1,
                 bic_validation: str = "memory",
                 der_weight: float = 0.1, der_topk: int | None = None,
                 ranpac_dim: int = 1024, ranpac_ridge: float = 1.0, agem_batch: int = 256,
                 mas_lambda: float = 1.0, mas_samples: int | None = 200,
                 aper_adapt: str = "full", l2p_pool: int = 10, l2p_top: int = 5,
                 l2p_length: int = 5,
                 freeze: str | None = None, lr: float = 1e-3, weight_decay: float = 0.0,
                 epochs: int = 5, batch_size: int = 32, schedule: str = "cosine",
                 warmup: float = 0.0, accumulate: int = 1, amp="auto",
                 grad_clip: float | None = None, cache: bool = True, seed: int = 0, device=None,
                 progress: bool = True, num_workers: int | str = 0, precise_bn: int = 0,
                 label_smoothing: float = 0.0, optimizer: str = "adamw", momentum: float = 0.9,
                 nesterov: bool = False, mixup: float | None = None,
                 cutmix: float | None = None, replay_schedule: str = "union", **run_options):
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
        self.model = StagedModel(model)
        self.protocol, self.initial_classes = protocol, None if classes is None else list(classes)
        options = SimpleNamespace(
            memory=memory, selection=selection, temperature=temperature, lwf_weight=lwf_weight,
            ewc_lambda=ewc_lambda, ewc_decay=ewc_decay, ewc_samples=ewc_samples,
            bic_holdout=bic_holdout, bic_validation=bic_validation, der_weight=der_weight,
            der_topk=der_topk, ranpac_dim=ranpac_dim, ranpac_ridge=ranpac_ridge,
            agem_batch=agem_batch, mas_lambda=mas_lambda, mas_samples=mas_samples,
            aper_adapt=aper_adapt, l2p_pool=l2p_pool, l2p_top=l2p_top, l2p_length=l2p_length,
            seed=seed)
        for name, (preset, value) in preset_options(self.method).items():
            if getattr(options, name) != value:
                raise ValueError(f"{preset} fixes {name}={value!r}: its exemplars are chosen "
                                 f"that way; got {name}={getattr(options, name)!r}")
        # The parts in registration order: the order their hooks run.
        self.methods = {name: cls(options, self.parts) for name, cls in METHODS.items()
                        if name in self.parts}
        self.replay_schedule = check_schedule(replay_schedule, self.methods, method)
        parts = self.methods.values()
        self.memory = (ExemplarMemory(memory, selection, seed, max(m.holdout for m in parts),
                                      any(m.holdout_beside for m in parts))
                       if any(m.uses_memory for m in parts) else None)
        if freeze is not None:
            freeze_module(nn.ModuleList(
                s.module for s in stages(self.model)[:split_index(self.model, freeze)]))
        self.lr, self.weight_decay, self.cache, self.seed = lr, weight_decay, cache, seed
        engine.check_optimizer(optimizer, momentum, nesterov)
        self.optim = dict(optimizer=optimizer, momentum=momentum, nesterov=nesterov)
        self.label_smoothing = engine.check_label_smoothing(label_smoothing)
        self.mix = BatchMix(mixup, cutmix)
        unmixed = [f"{name} ({m.unmixed})" for name, m in self.methods.items() if m.unmixed]
        if self.mix and (protocol == "task" or unmixed):
            raise ValueError("mixup/cutmix mix the samples of the class protocol's one head: "
                             "not with protocol='task' (a sample's rows are its own task's), "
                             + ", ".join(unmixed or [f"{name} ({cls.unmixed})" for name, cls
                                                     in METHODS.items() if cls.unmixed]))
        self.device = D.resolve_device(device)
        self.fit_args = dict(epochs=epochs, batch_size=batch_size, schedule=schedule,
                             warmup=warmup, accumulate=accumulate, amp=amp,
                             grad_clip=grad_clip, progress=progress,
                             num_workers=num_workers, precise_bn=precise_bn,
                             **engine.run_options(run_options, has_val=False))
        self.plan: Plan | None = None
        self.R: dict[str, list[list[float | None]]] = {"class": [], "task": []}
        self.history: list[list[dict]] = []

    # -- what the methods' hooks read --------------------------------------------------------
    def restrict(self, logits: torch.Tensor, y: torch.Tensor, row_task: torch.Tensor):
        """Task protocol: each sample sees only its own task's rows (a multi-head model)."""
        if self.protocol == "class":
            return logits
        same = row_task[: logits.shape[1]][None, :] == row_task[y][:, None]
        return logits.masked_fill(~same, float("-inf"))

    def outputs(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, C], labels [N]) of ``data`` in eval mode."""
        from ptcore.cache.build import inference

        logits, labels = [], []
        with inference(self.model):
            for x, y in engine.make_loader(data, 256, num_workers=self.fit_args["num_workers"],
                                           device=self.device):
                logits.append(self.model(x.to(self.device)).float())
                labels.append(y.to(self.device))
        return torch.cat(logits), torch.cat(labels)

    # -- the loss ------------------------------------------------------------------------
    def _step_fn(self, widths: list[int]):
        """The engine's step: the classification loss, then each part's terms in order.
        ``widths``: how many batch fields each part's train_data appended."""
        row_task = self.plan.row_task().to(self.device)
        rows = head_width(get_head(self.model))
        methods = list(self.methods.values())

        def step(model, batch):
            x, y, *extra = batch
            fields, at = [], 0
            for width in widths:
                fields.append(tuple(extra[at:at + width]))
                at += width
            target = y
            if self.mix:  # the loss below takes soft targets
                x, target = self.mix(x, y, rows)
            logits = model(x).float()
            restricted = self.restrict(logits, y, row_task)
            masks = [m.labelled(f) for m, f in zip(methods, fields)]
            labelled = next((k for k in masks if k is not None), None)
            if labelled is not None:  # some samples bring no label to learn from
                loss = (F.cross_entropy(restricted[labelled], y[labelled], reduction="sum",
                                        label_smoothing=self.label_smoothing)
                        / labelled.sum().clamp_min(1))
            else:
                loss = F.cross_entropy(restricted, target, label_smoothing=self.label_smoothing)
            out = {"accuracy": soft_accuracy(logits, target)}
            for m, f in zip(methods, fields):
                for name, term in m.loss_terms(self, Step(x, y, logits, f)).items():
                    loss = loss + (term.value if term.weight is None
                                   else term.weight * term.value)
                    out[name] = term.value.detach()
            return {"loss": loss, **out}

        return step

    # -- one task ------------------------------------------------------------------------
    def _learn(self, t: int, train: list, out_dir, resume: bool) -> list[dict]:
        """Grow the head and train on task ``t`` (its data and what the parts add)."""
        for m in self.methods.values():
            m.before_task(self, t, train)
        stop = self.plan.spans[t][1]
        if t == 0 and self.initial_classes is None:
            replace_head(self.model.model, stop)
        elif stop > head_width(get_head(self.model)):
            expand_head(self.model.model, stop - head_width(get_head(self.model)))
        self.model.to(self.device)
        if not all(m.trains for m in self.methods.values()) or (t == 0 and self.plan.skip_first):
            return []
        data, widths = training_data(self, t, train)
        optimizer = engine.make_optimizer(layer_decay_groups(self.model, self.lr, 1.0,
                                                             self.weight_decay), **self.optim)
        history = engine.fit(self.model, data, optimizer, step_fn=self._step_fn(widths),
                             before_step=lambda model: [m.before_step(self, model)
                                                        for m in self.methods.values()],
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
        """After task ``t``: the parts correct the head, the memory takes the task's
        exemplars, then the parts keep what the next tasks need."""
        for m in self.methods.values():
            m.after_training(self, t, train)
        if self.memory is not None:
            self.memory.add(self.model, t, train[t], list(range(*self.plan.spans[t])),
                            device=self.device, num_workers=self.fit_args["num_workers"])
        for m in self.methods.values():
            m.after_task(self, t, train)

    # -- evaluation ----------------------------------------------------------------------
    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.methods.values():
            scores = m.scores(self, x)
            if scores is not None:
                return scores
        return self.model(x)

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
    def _plan_record(self) -> dict:  # the schedule when not the default (older runs': union)
        mixed = {"replay_schedule": "mixed"} if self.replay_schedule == "mixed" else {}
        return {"method": self.method, "protocol": self.protocol,
                "classes": self.plan.classes, "tasks": self.plan.task_classes, **mixed}

    def _save(self, out: engine.RunFolder, t: int) -> None:
        def save():
            engine.save_checkpoint(
                out.task(t).state, self.model.state_dict(), task=t,
                plan=self._plan_record(), R=self.R, history=self.history,
                rng=get_rng_state(),  # the next task's new head rows and batches
                **{name: part.state_dict() if part is not None else None
                   for name, part in self._parts_with_state(every_key=True).items()})
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
        self.R, self.history = state["R"], state["history"]
        for name, part in self._parts_with_state().items():
            if name == "memory":
                part.load_state_dict(state[name])
            else:
                part.load_state_dict(state[name], self.device)
        if "rng" in state:
            set_rng_state(state["rng"])
        return t + 1

    def _parts_with_state(self, every_key: bool = False) -> dict:
        """What the run carries from task to task besides the model (in state.pt), by key:
        the memory and each part's state. ``every_key``: with None for the keys of the
        methods not in this run (every state.pt has the same keys)."""
        keys = {cls.state_key: None for cls in METHODS.values() if every_key and cls.state_key}
        mine = {m.state_key: m for m in self.methods.values() if m.state_key}
        memory = {"memory": self.memory} if every_key or self.memory is not None else {}
        return {**memory, **keys, **mine}

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
        if self.plan.spans[0][0] and any(m.every_class for m in self.methods.values()):
            raise ValueError(f"{self.method} needs data of every class, but classes "
                             f"{self.plan.classes[:self.plan.spans[0][0]]} of the model's head "
                             "are in no task")
        if (not all(m.trains for m in self.methods.values())
                and not all(map(is_deterministic, train_tasks))):
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
        return run_results(self.R, method=self.method, protocol=self.protocol,
                           classes=self.plan.classes, tasks=self.plan.task_classes,
                           train_seconds=seconds,
                           exemplars=(len(self.memory) if self.memory is not None else 0)
                           + sum(m.exemplars() for m in self.methods.values()),
                           history=self.history)

    def _write(self, out: engine.RunFolder, results: dict) -> None:
        out.write_results(results)
        out.write_model(self.model.state_dict())
        write_plots(out.path, results, self.plan.task_classes)
