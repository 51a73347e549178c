"""Distill: train a student on a frozen teacher's temperature-softened outputs
(ptcore.kd_loss / ptcore.kd_loss_topk), on labelled data (hard CE + KD) and unlabelled data
(KD only: the teacher's soft pseudo-labels).

Composes ptcore.models (freezing), ptcore.cache (the offline teacher: its outputs over the
training data computed once) and ptcore.engine (the loop); the terms of the loss are
plug-ins (ptcore/strategies/distill/terms.py). See docs/distill.md.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn

from ptcore import engine
from ptcore._kd_args import DIVERGENCES, check_float
from ptcore.cache.build import inference
from ptcore.runtime import distributed as D
from ptcore.models import freeze
from ptcore.strategies._param_groups import weight_decay_groups
from ptcore.strategies.distill.data import PseudoLabelData, WithIndex, WithTeacherRows
from ptcore.strategies.distill.layers import FeatureTerm, StudentWithAdapters, Taps, \
    pairing_error
from ptcore.strategies.distill.teacher import TeacherView, unpack
from ptcore.strategies.distill.terms import Setup, Step, check_options, option_names, \
    parse_method

__all__ = ["Distill", "DISTILL_MODES", "DIVERGENCES", "parse_distill_method"]

DISTILL_MODES = ("online", "offline")
IGNORE = -100  # the label of unlabelled samples


def parse_distill_method(method: str) -> tuple[str, ...]:
    """The names of the terms of a method such as "dkd" or "fitnets+kd", the logit term
    first ("kd" unless another logit term is named)."""
    return tuple(t.name for t in parse_method(method))


def _size(value, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else \
        tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                 for v in pair):
        raise ValueError(f"{name} must be None, a positive int or (height, width), got {value!r}")
    return pair


@contextmanager
def _count_samples(module: nn.Module):
    """Counts the samples ``module`` runs on while the block is open."""
    seen = [0]

    def hook(module, args, output):
        seen[0] += args[0].shape[0]

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


class Distill:
    """Distil ``teacher`` (frozen here, for good) into ``student``; both map images to logits
    over the same classes and may differ in architecture and input size.

    loss: per row ``soft_weight·T²·KL(p_t‖p_s) + hard_weight·CE(student, label)``, the hard
    term on labelled rows only; averaged over the rows that count (see
    :func:`~ptcore.strategies.distill.kd.kd_term_loss`).
    mode: "online" (the teacher runs every step: eval mode, no grad, under the loop's AMP) or
    "offline" (its outputs over the training data are computed once into a
    :class:`ptcore.FeatureCache` and served every epoch; the data must be deterministic).
    topk: distil against the teacher's K largest logits only (``ptcore.kd_loss_topk``); the
    offline cache then holds K values + K indices per sample instead of V logits.
    threshold: unlabelled samples count only where the teacher's top probability at the
    distillation temperature (the soft target they learn from; over the K kept classes with
    ``topk``) is at least this; read from the loss kernel's row statistics, no extra pass.
    method: the terms of the loss joined by "+" (ptcore/strategies/distill/terms.py: the
    registry; one term of each kind). The logit term, "kd" (``divergence``: "forward_kl",
    "reverse_kl" or "jsd" with ``beta``, as in :func:`ptcore.kd_loss`) or "dkd" (decoupled
    KD, ``dkd_alpha`` on the target-class term, ``dkd_beta`` on the non-target term),
    optionally with a feature term, "fitnets" (hints through a learned adapter) or "at"
    (attention transfer) between the layer pairs ``features`` (module paths,
    ``[("student.path", "teacher.path"), ...]`` or "student.path:teacher.path"), weight
    ``feature_weight``; logit KD stays on top (``soft_weight=0`` turns it off). Feature
    terms need the online teacher. A registered term's own options are keyword arguments
    too. teacher_input_size: resize inputs (bilinear) for the teacher.
    cache_dtype: storage of cached full logits (float16, bfloat16, float32, int8); top-k rows
    are float32. cache_dir: where the offline cache persists and is reused across runs
    (default ``out_dir/teacher_cache``; in memory without either).
    The rest go to the optimizer (AdamW, or ``optimizer="sgd"`` with ``momentum``,
    ``nesterov``; no weight decay on norms, biases and embeddings: ptcore/strategies/
    _param_groups.py) and :func:`ptcore.engine.fit` (``precise_bn``: re-estimate the
    BatchNorm statistics after each epoch, for short runs and low-momentum BatchNorm).
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, *, temperature: float = 4.0,
                 soft_weight: float = 1.0, hard_weight: float = 1.0, mode: str = "online",
                 topk: int | None = None, threshold: float | None = None,
                 teacher_input_size=None, cache_dtype: torch.dtype = torch.float16,
                 cache_dir=None, method: str = "kd", divergence: str = "forward_kl",
                 beta: float = 0.5, dkd_alpha: float = 1.0, dkd_beta: float = 8.0,
                 features: list | None = None, feature_weight: float = 1.0,
                 lr: float = 1e-3, weight_decay: float = 0.01,
                 epochs: int = 10, batch_size: int = 64, schedule: str = "cosine",
                 warmup: float = 0.1, accumulate: int = 1, amp="auto",
                 grad_clip: float | None = None, seed: int = 0, device=None,
                 progress: bool = True, num_workers: int | str = 0,
                 precise_bn: int = 0, optimizer: str = "adamw", momentum: float = 0.9,
                 nesterov: bool = False, **run_options):
        for name, m in (("teacher", teacher), ("student", student)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(m).__name__}")
        if teacher is student:
            raise ValueError("teacher and student must be different modules")
        if mode not in DISTILL_MODES:
            raise ValueError(f"mode must be one of {DISTILL_MODES}, got {mode!r}")
        self.temperature = check_float(temperature, "temperature", positive=True)
        self.soft_weight = check_float(soft_weight, "soft_weight", nonneg=True)
        self.hard_weight = check_float(hard_weight, "hard_weight", nonneg=True)
        if self.soft_weight == 0 and self.hard_weight == 0:
            raise ValueError("soft_weight and hard_weight are both 0: nothing to learn from")
        if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
            raise ValueError(f"topk must be None or a positive int, got {topk!r}")
        if threshold is not None and not 0.0 <= check_float(threshold, "threshold") <= 1.0:
            raise ValueError(f"threshold must be None or in [0, 1], got {threshold!r}")
        if cache_dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.int8):
            raise TypeError(f"cache_dtype must be float16, bfloat16, float32 or int8, got "
                            f"{cache_dtype}")
        self.mode, self.topk, self.threshold = mode, topk, threshold
        self.method = method.lower() if isinstance(method, str) else method
        terms = parse_method(method)
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
        if not 0.0 < check_float(beta, "beta") < 1.0:
            raise ValueError(f"beta must be in (0, 1), got {beta!r}")
        self.divergence, self.beta = divergence, beta
        setup = Setup(mode=mode, topk=topk, threshold=threshold, temperature=self.temperature,
                      soft_weight=self.soft_weight, hard_weight=self.hard_weight,
                      divergence=divergence, beta=beta, ignore_index=IGNORE)
        options = check_options({
            "dkd_alpha": dkd_alpha, "dkd_beta": dkd_beta, "features": features,
            "feature_weight": feature_weight,
            **{k: run_options.pop(k) for k in list(run_options) if k in option_names()}})
        self.terms = [term(setup, options) for term in terms]
        # The feature term (one at most): its layers are tapped on both sides every step.
        self.feature = next((t for t in self.terms if isinstance(t, FeatureTerm)), None)
        self.pairs = self.feature.pairs if self.feature is not None else None
        if self.feature is None and options["features"] is not None:
            raise pairing_error(method, features)
        # The student with the feature term's adapters and the terms' own modules, as
        # trained (None: the student alone is).
        self.trained = None
        self.index = any(t.index for t in self.terms)  # batches carry each row's index
        if cache_dir is not None and os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
            raise ValueError(f"cache_dir {str(cache_dir)!r} is a file, not a folder")
        self.cache_dtype, self.cache_dir = cache_dtype, cache_dir
        self.teacher = freeze(teacher)  # no grads, eval mode held even under .train()
        self.student = student
        self.view = TeacherView(teacher, input_size=_size(teacher_input_size,
                                                          "teacher_input_size"), topk=topk)
        self.device = D.resolve_device(device)
        weight_decay = check_float(weight_decay, "weight_decay", nonneg=True)
        self.optimizer = engine.make_optimizer(
            weight_decay_groups(student, weight_decay), optimizer, momentum=momentum,
            nesterov=nesterov, lr=check_float(lr, "lr", positive=True),
            weight_decay=weight_decay)
        self.fit_args = dict(epochs=epochs, batch_size=batch_size, schedule=schedule,
                             warmup=warmup, accumulate=accumulate, amp=amp,
                             grad_clip=grad_clip, seed=seed, progress=progress,
                             num_workers=num_workers, precise_bn=precise_bn,
                             **engine.run_options(run_options))
        self.cache = None  # the offline teacher cache of the last fit

    # -- the teacher's side --------------------------------------------------------------
    def _cache_path(self, out_dir) -> Path | None:
        root = self.cache_dir if self.cache_dir is not None else (
            Path(out_dir) / "teacher_cache" if out_dir is not None else None)
        if root is None:
            return None
        return Path(root) / ("logits" if self.topk is None else f"top{self.topk}")

    def _build_cache(self, data: PseudoLabelData, out_dir):
        from ptcore.cache import FeatureCache

        if not data.deterministic:
            raise ValueError(
                "mode='offline' computes the teacher's outputs once, so the training data must "
                "be deterministic, and it applies random transforms (or does not say it is "
                "deterministic: set dataset.deterministic = True if it is). A cached teacher "
                "output would not match the freshly augmented input the student sees; use "
                "mode='online' to distil with augmentation")
        return FeatureCache(self.view, data,
                            dtype=self.cache_dtype if self.topk is None else torch.float32,
                            path=self._cache_path(out_dir), device=self.device,
                            progress=self.fit_args["progress"],
                            num_workers=self.fit_args["num_workers"]).build()

    def _check_classes(self, data: PseudoLabelData) -> None:
        """Teacher and student must score the same classes; checked before any step."""
        x = data[0][0].unsqueeze(0).to(self.device)
        with inference(self.student):
            classes = self.student(x).shape[-1]
        if self.cache is not None and self.topk is not None:
            # Only the kept classes are on record: each must be one of the student's.
            top = int(self.cache.get(slice(None))[:, self.topk:].max())
            if top >= classes:
                raise ValueError(f"the cached teacher ranks class {top} in its top "
                                 f"{self.topk}, but the student scores {classes} classes")
            return
        if self.cache is not None:
            teacher_classes = self.cache.sample_shape[-1]
        else:
            with torch.no_grad():
                teacher_classes = self.view.logits(x).shape[-1]
            if self.topk is not None and self.topk > teacher_classes:
                raise ValueError(f"topk={self.topk} is more than the teacher's "
                                 f"{teacher_classes} classes")
        if teacher_classes != classes:
            raise ValueError(f"the teacher scores {teacher_classes} classes and the student "
                             f"{classes}; they must score the same classes")

    # -- training ------------------------------------------------------------------------
    def _step(self, model, batch) -> dict:
        x, y, *extra = batch
        index = extra.pop() if self.index else None
        if extra:
            rows = extra[0]
        else:
            with torch.no_grad():
                rows = self.view(x)
        step = Step(model(x), y, unpack(rows, self.topk), index=index)
        if self.feature is not None:
            step.student_features = self.trained.hints
            step.teacher_features = [self.teacher_taps.outputs[t] for _, t in self.pairs]
        parts = [term.loss(step) for term in self.terms]
        out = {"loss": parts[0]["loss"]}
        for part in parts[1:]:
            out["loss"] = out["loss"] + part["loss"]
        for part in parts:
            out.update((k, v) for k, v in part.items() if k != "loss")
        return out

    def _probe(self, data: PseudoLabelData):
        """Runs teacher and student on one training sample (their hooks see it)."""
        x = data[0][0].unsqueeze(0).to(self.device)

        def probe():
            with torch.no_grad():
                self.view.logits(x)
            with inference(self.student):
                self.student(x)
        return probe

    def _prepare_terms(self, data: PseudoLabelData) -> None:
        """The terms' own modules (:meth:`Term.attach`) joined to the trained module, their
        parameters handed to the optimizer (once: a later fit keeps a module it returns
        again)."""
        for term in self.terms:
            module = term.attach(self.student, self.teacher, self._probe(data), len(data),
                                 self.fit_args["seed"])
            if module is None:
                continue
            if self.trained is None:
                self.trained = StudentWithAdapters(self.student, [])
            if term.name not in self.trained.terms:
                self.trained.terms[term.name] = module.to(self.device)
                params = [p for p in module.parameters() if p.requires_grad]
                if params:
                    self.optimizer.add_param_group({"params": params})

    def _prepare_features(self, data: PseudoLabelData) -> None:
        """Hooks on both sides, and the FitNets adapters sized from one probe sample and
        handed to the optimizer (once: a later fit reuses them)."""
        self.teacher_taps = Taps(self.teacher, [t for _, t in self.pairs], "teacher")
        if self.trained is None:
            self.trained = StudentWithAdapters(self.student, self.pairs)
            self._probe(data)()
            teacher = [self.teacher_taps.outputs[t] for _, t in self.pairs]
            if self.feature.adapter is not None:
                self.trained.build_adapters(teacher, self.fit_args["seed"], self.feature.adapter)
                self.trained.to(self.device)
                params = list(self.trained.adapters.parameters())
                if params:
                    self.optimizer.add_param_group({"params": params})
        else:
            self.trained.taps = Taps(self.student, [s for s, _ in self.pairs], "student")

    def fit(self, train, unlabelled=None, val=None, *, out_dir=None, resume: bool = False,
            meta: dict | None = None) -> dict:
        """Train the student on ``train`` (labelled) and ``unlabelled`` (its labels are never
        read), validating on ``val`` each epoch. With ``out_dir`` write ``last.pt`` (every
        epoch), ``metrics.jsonl``, ``model.pt`` (the student) and ``summary.json``. Returns
        the summary: settings, per-epoch history, final validation metrics, how many samples
        the teacher ran on during this call and the offline cache."""
        start_time = time.perf_counter()
        data = PseudoLabelData(train, unlabelled, ignore_index=IGNORE)
        if len(data) == 0:
            raise ValueError("train and unlabelled are both empty: nothing to train on")
        self.view.to(self.device)
        self.student.to(self.device)
        with _count_samples(self.teacher) as teacher_samples:
            self.cache = self._build_cache(data, out_dir) if self.mode == "offline" else None
            self._check_classes(data)
            if self.feature is not None:
                self._prepare_features(data)
            train_data = WithTeacherRows(data, self.cache) if self.cache is not None else data
            try:
                self._prepare_terms(data)
                history = engine.fit(
                    self.student if self.trained is None else self.trained,
                    WithIndex(train_data) if self.index else train_data,
                    self.optimizer, step_fn=self._step, val_data=val, out_dir=out_dir,
                    resume=resume, device=self.device, meta=meta, **self.fit_args)
            finally:
                for term in self.terms:
                    term.detach()
                if self.feature is not None:
                    self.teacher_taps.remove()
                    self.trained.taps.remove()
        summary = {
            "mode": self.mode, "method": self.method, "divergence": self.divergence,
            "features": self.pairs, "topk": self.topk, "temperature": self.temperature,
            "soft_weight": self.soft_weight, "hard_weight": self.hard_weight,
            "threshold": self.threshold, "labelled": data.num_labelled,
            "unlabelled": len(data) - data.num_labelled, "teacher_samples": teacher_samples[0],
            "cache": None if self.cache is None else {
                "path": self.cache.path, "fingerprint": self.cache.fingerprint,
                "bytes": self.cache.nbytes, "dtype": str(self.cache.dtype)},
            "seconds": time.perf_counter() - start_time, "history": history,
            "final": history[-1] if history else {}}
        if out_dir is not None:
            engine.RunFolder.of(out_dir).finish(self.student.state_dict(), summary)
        return summary

    def evaluate(self, data, *, batch_size: int = 256) -> dict:
        """Loss and accuracy of the student on ``data``."""
        return engine.evaluate(self.student, data, batch_size=batch_size, device=self.device,
                               amp=self.fit_args["amp"])
