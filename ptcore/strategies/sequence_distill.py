"""Offline distillation of a causal language model: the teacher's top-k log-probabilities
for every token are cached once (a FeatureCache), and the student learns from them through
the fused linear + KD loss, so neither model's [tokens, V] logits are kept around.

Token windows are ``[M, L + 1]``: L inputs and, shifted by one, the L tokens they predict.
The student is any module with ``hidden_states(tokens [B, L]) -> [B, L, H]`` and an
``lm_head`` (``nn.Linear(H, V)``); the teacher is any module ``tokens [B, L] -> logits
[B, L, V]``. The student trains on :func:`ptcore.engine.fit` (checkpoints, resume, DDP, AMP,
loggers). See docs/llm.md."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ptcore import engine
from ptcore.cache import FeatureCache
from ptcore.ops.fused_linear_kd import fused_linear_kd_loss
from ptcore.runtime import distributed as D

__all__ = ["TopKTokenTeacher", "cache_teacher", "train_student", "next_token_loss"]

# Class indices ride in float32 next to the values; float32 holds integers exactly to 2**24.
_MAX_VOCAB = 2 ** 24


class TopKTokenTeacher(nn.Module):
    """Token windows ``[B, L + 1]`` → for each of the L input positions the teacher's K
    largest next-token log-probabilities (T = 1) and their token ids, packed into one float32
    row ``[B, L, 2K]`` that a FeatureCache stores as is."""

    def __init__(self, teacher: nn.Module, k: int):
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.teacher, self.k = teacher, k

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        logits = self.teacher(windows[:, :-1])
        V = logits.shape[-1]
        if self.k > V or V > _MAX_VOCAB:
            raise ValueError(f"k={self.k} must be at most the vocabulary ({V}), itself at most "
                             f"{_MAX_VOCAB} (token ids are stored as float32)")
        values, indices = logits.float().log_softmax(-1).topk(self.k, dim=-1)
        return torch.cat([values, indices.float()], dim=-1)

    def extra_repr(self) -> str:  # part of the FeatureCache fingerprint
        return f"k={self.k}"


def cache_teacher(teacher: nn.Module, windows: torch.Tensor, k: int, **cache_options
                  ) -> FeatureCache:
    """Build (or load, with ``path=``) the top-k cache of ``teacher`` over token ``windows``
    ``[M, L + 1]``: one ``[L, 2K]`` row per window. ``cache_options`` go to FeatureCache
    (dtype float32 by default: token ids must stay exact)."""
    cache_options.setdefault("dtype", torch.float32)
    if cache_options["dtype"] != torch.float32:
        raise ValueError("the top-k cache stores token ids next to the values: dtype must be "
                         "float32")
    cache_options.setdefault("progress", False)
    return FeatureCache(TopKTokenTeacher(teacher, k), windows, **cache_options).build()


def _unpack(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return rows[..., :k], rows[..., k:].long()


def next_token_loss(student: nn.Module, windows: torch.Tensor, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) of ``student`` over ``windows`` [M, L + 1]."""
    total, count = 0.0, 0
    was_training = student.training
    student.eval()
    with torch.no_grad():
        for a in range(0, windows.shape[0], batch_size):
            tokens = windows[a:a + batch_size]
            logits = student.lm_head(student.hidden_states(tokens[:, :-1]))
            total += torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="sum").item()
            count += tokens[:, 1:].numel()
    student.train(was_training)
    return total / max(count, 1)


class _Draws(Dataset):
    """Epoch ``epoch``'s ``count`` windows, drawn uniformly with replacement (a generator
    seeded by ``seed``, which drew the earlier epochs' first), each with the teacher's
    cached rows for it: items ``(window,)`` or ``(window, rows)``."""

    def __init__(self, windows: torch.Tensor, cache: FeatureCache | None, count: int, *,
                 seed: int, epoch: int):
        g = torch.Generator().manual_seed(seed)
        self.index = torch.randint(0, windows.shape[0], ((epoch + 1) * count,),
                                   generator=g)[epoch * count:]
        self.windows, self.cache = windows, cache

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: list[int]):
        index = self.index[positions]
        tokens = self.windows[index.to(self.windows.device)]
        if self.cache is None:
            return [(t,) for t in tokens]
        return list(zip(tokens, self.cache.get(index, device=tokens.device)))


class _HiddenStates(nn.Module):
    """The student as the engine trains it: ``forward`` is ``hidden_states`` (so DDP sees
    the call); the loss reads ``lm_head`` itself, fused with the loss."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.student.hidden_states(tokens)


def train_student(student: nn.Module, windows: torch.Tensor, *, cache: FeatureCache | None,
                  steps: int, batch_size: int = 32, lr: float = 3e-3, temperature: float = 1.0,
                  soft_weight: float = 1.0, hard_weight: float = 1.0, tail_bucket: bool = True,
                  seed: int = 0, epochs: int = 1, out_dir=None, resume: bool | str = False,
                  device=None, amp="off", progress: bool = False, num_workers: int | str = 0,
                  **run_options) -> list[float]:
    """Train ``student`` on ``windows`` [M, L + 1]: ``epochs`` epochs of ``steps`` AdamW
    steps (constant ``lr``), each on ``batch_size`` windows per process drawn uniformly with
    replacement. The loss is next-token cross entropy (``hard_weight``) plus, with a
    ``cache`` from :func:`cache_teacher` over the same windows, KL to the teacher's cached
    top-k (``soft_weight``, ``temperature``, ``tail_bucket``); without a cache it is the
    labels-only baseline. Training runs on :func:`ptcore.engine.fit` (on ``device``, by
    default the student's), so with ``out_dir`` it writes ``last.pt`` and ``metrics.jsonl``
    every epoch and ``resume`` continues from them; ``amp``, ``progress``, ``num_workers``
    and ``run_options`` (``log``, ``save_every``, ...) are the engine's. Returns the losses
    of the steps this call trained."""
    if cache is not None and len(cache) != windows.shape[0]:
        raise ValueError(f"the cache has {len(cache)} rows for {windows.shape[0]} windows")
    if cache is None and hard_weight <= 0:
        raise ValueError("without a teacher cache, hard_weight must be > 0")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    k = None if cache is None else cache.sample_shape[-1] // 2
    losses = []

    def step(model, batch) -> torch.Tensor:
        tokens, *rows = batch
        hidden = model(tokens[:, :-1])
        labels, head = tokens[:, 1:], student.lm_head
        if not rows:
            loss = hard_weight * nn.functional.cross_entropy(head(hidden).flatten(0, 1),
                                                             labels.flatten())
        else:
            values, indices = _unpack(rows[0], k)
            loss = fused_linear_kd_loss(hidden, head.weight, head.bias, teacher_values=values,
                                        teacher_indices=indices, labels=labels,
                                        temperature=temperature, soft_weight=soft_weight,
                                        hard_weight=hard_weight, tail_bucket=tail_bucket)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the loss became {losses[-1]} at step {len(losses) - 1}")
        return loss

    def draws(epoch: int) -> _Draws:  # inside fit: the world size is known
        return _Draws(windows, cache, steps * batch_size * D.world_size(), seed=seed,
                      epoch=epoch)

    meta = {"strategy": "sequence_distill", "steps": steps, "teacher_k": k,
            "temperature": temperature, "soft_weight": soft_weight, "hard_weight": hard_weight,
            "tail_bucket": tail_bucket}
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr)
    engine.fit(_HiddenStates(student), draws, optimizer, epochs=epochs, batch_size=batch_size,
               step_fn=step, schedule="constant", warmup=0.0, seed=seed, out_dir=out_dir,
               resume=resume, meta=meta,
               device=device if device is not None else next(student.parameters()).device,
               amp=amp, progress=progress, num_workers=num_workers,
               **engine.run_options(run_options))
    return losses
