"""The distillation loss of a Hugging Face causal LM through ptcore.fused_linear_kd_loss:
the student's (and the teacher's) last hidden states and lm_head weight go to the fused op,
which computes the logits a chunk of rows at a time, so no [tokens, vocab] tensor exists.

Position t predicts token t + 1 (the shift HF's own loss makes): the rows are the hidden
states of positions 0..L-2 and the targets ``labels[:, 1:]``. A target equal to -100 (a
padded position, ``attention_mask == 0``, or a label the user masked) drops its row from
both the soft and the hard term."""
from __future__ import annotations

import torch

from ptcore.cache.build import inference
from ptcore.integrations.hf.model import CausalLM, teacher_rows
from ptcore.nn import FusedLinearKDLoss

__all__ = ["LMDistillLoss", "next_token_labels", "held_out_loss"]


def next_token_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      labels: torch.Tensor | None = None, ignore_index: int = -100
                      ) -> torch.Tensor:
    """``[B, L - 1]`` targets of positions 0..L-2: ``labels`` (default ``input_ids``) shifted
    by one, ``ignore_index`` where the target is padding."""
    labels = input_ids if labels is None else labels
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, ignore_index)
    return labels[:, 1:]


def _as_lm(model, check: bool) -> CausalLM:
    return model if isinstance(model, CausalLM) else CausalLM(model, check=check)


class LMDistillLoss:
    """``loss = LMDistillLoss(student, teacher, **options)(input_ids, attention_mask,
    labels)``: ``soft_weight`` × KL (or ``divergence``) between the teacher's and the
    student's next-token distributions at ``temperature`` + ``hard_weight`` × next-token
    cross-entropy, averaged over the target tokens (not -100), or summed and divided by
    ``num_items_in_batch`` when given (what ``transformers.Trainer`` passes so that gradient
    accumulation weighs every token alike). The options are ``ptcore.fused_linear_kd_loss``'s.

    The teacher is a model (online: it runs under no_grad every call), or, with
    ``teacher=None``, its top-k per call (``teacher_values``/``teacher_indices``
    ``[B, L - 1, K]``, e.g. from a :class:`~ptcore.integrations.hf.TeacherStore`). With
    ``teacher=None`` and ``soft_weight=0`` it is the labels-only loss (a baseline), still
    without the logits. Neither model's ``lm_head`` is called (see :class:`CausalLM`; tied
    embeddings get the head's gradient through the shared weight).

    ``vocab_size``: the shared tokenizer's size (``vocabulary_size(tokenizer)``), for heads
    padded beyond it: the teacher keeps that many rows, a student padded larger gets a
    teacher probability of 0 on its extra rows (see ``fused_linear_kd_loss``). Without it a
    teacher padded larger than the student keeps the student's rows. ``divergence``
    may also be ``"cosine"`` (1 - cos of the two logit vectors, a full teacher only);
    ``fp32_logits``: float32 logits out of half-precision matmuls. Called with
    ``return_parts=True`` it returns ``(loss, {"soft": ..., "hard": ...})``: the KD term
    and the cross-entropy before their weights, normalised like the loss, detached."""

    def __init__(self, student, teacher=None, *, temperature: float = 1.0,
                 divergence: str = "forward_kl", beta: float = 0.5, hard_weight: float = 0.0,
                 soft_weight: float = 1.0, tail_bucket: bool = False,
                 chunk_size: int | None = None, ignore_index: int = -100, check: bool = True,
                 vocab_size: int | None = None, fp32_logits: bool = False):
        self.student = _as_lm(student, check)
        self.teacher = None if teacher is None else _as_lm(teacher, check)
        self.vocab_size = vocab_size
        if self.teacher is not None:  # refuse a real mismatch now
            teacher_rows(self.teacher, self.student.vocab_size, vocab_size)
        self.ignore_index = ignore_index
        padded = vocab_size is not None and vocab_size < self.student.vocab_size
        self.fn = FusedLinearKDLoss(temperature=temperature, divergence=divergence, beta=beta,
                                    hard_weight=hard_weight, soft_weight=soft_weight,
                                    tail_bucket=tail_bucket, chunk_size=chunk_size,
                                    ignore_index=ignore_index, reduction="sum",
                                    vocab_size=vocab_size if padded else None,
                                    fp32_logits=fp32_logits)

    def _teacher(self, input_ids, attention_mask, values, indices) -> dict:
        if values is not None or indices is not None:
            return {"teacher_values": values, "teacher_indices": indices}
        if self.teacher is not None:
            with inference(self.teacher.model):
                th = self.teacher.hidden(input_ids, attention_mask)[:, :-1]
            w, b = teacher_rows(self.teacher, self.student.vocab_size, self.vocab_size)
            return {"teacher_hidden": th, "teacher_weight": w, "teacher_bias": b}
        if self.fn.options["soft_weight"] != 0:
            raise ValueError("no teacher: give LMDistillLoss a teacher model, pass "
                             "teacher_values and teacher_indices, or set soft_weight=0 "
                             "(labels only)")
        # Labels only: a one-class top-k teacher whose soft term has weight 0.
        shape = (*input_ids.shape[:-1], input_ids.shape[-1] - 1, 1)
        zeros = torch.zeros(shape, device=input_ids.device)
        return {"teacher_values": zeros, "teacher_indices": zeros.long()}

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, *,
                 teacher_values: torch.Tensor | None = None,
                 teacher_indices: torch.Tensor | None = None,
                 num_items_in_batch: torch.Tensor | int | None = None,
                 return_parts: bool = False, student_hidden: torch.Tensor | None = None):
        if input_ids.dim() != 2 or input_ids.shape[1] < 2:
            raise ValueError(f"input_ids must be [batch, length >= 2], got "
                             f"{tuple(input_ids.shape)}")
        targets = next_token_labels(input_ids, attention_mask, labels, self.ignore_index)
        teacher = self._teacher(input_ids, attention_mask, teacher_values, teacher_indices)
        if student_hidden is None:  # else: computed by the caller (DistillTrainer under DDP)
            student_hidden = self.student.hidden(input_ids, attention_mask)
        hidden = student_hidden[:, :-1]
        total = self.fn(hidden, self.student.weight, self.student.bias, labels=targets,
                        return_parts=return_parts, **teacher)
        if num_items_in_batch is None:
            num_items_in_batch = (targets != self.ignore_index).sum().clamp_min(1)
        if not return_parts:
            return total / num_items_in_batch
        total, parts = total
        return total / num_items_in_batch, {k: v / num_items_in_batch for k, v in parts.items()}


@torch.no_grad()
def held_out_loss(student, windows: torch.Tensor, *, batch_size: int = 16,
                  attention_mask: torch.Tensor | None = None) -> float:
    """Mean next-token cross-entropy (nats per token) of ``student`` over token ``windows``
    ``[M, L]``, in eval mode and without the logits."""
    lm = _as_lm(student, False)
    loss = LMDistillLoss(lm, soft_weight=0.0, hard_weight=1.0)
    device = lm.weight.device
    total, count = 0.0, 0
    with inference(lm.model):
        for a in range(0, windows.shape[0], batch_size):
            ids = windows[a:a + batch_size].to(device)
            mask = None if attention_mask is None else attention_mask[a:a + batch_size].to(device)
            n = int((next_token_labels(ids, mask) != -100).sum())
            total += float(loss(ids, mask, num_items_in_batch=1))
            count += n
    return total / max(count, 1)
