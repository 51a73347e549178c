"""``DistillTrainer``: ``transformers.Trainer`` with ptcore's fused distillation loss. A
script that trains a causal LM with ``Trainer`` changes in two lines (docs/llm.md)::

    trainer = DistillTrainer(model=student, teacher_model=teacher,
                             distill={"temperature": 2.0, "hard_weight": 0.5},
                             args=args, train_dataset=ds, data_collator=collator)

Everything else is the Trainer's: optimizer, schedule, gradient accumulation (the loss is
summed over tokens and divided by the Trainer's ``num_items_in_batch`` where it counts them,
so that accumulated micro-batches weigh every token alike), autocast, gradient checkpointing
(``args.gradient_checkpointing``), logging and checkpoints. The training logs gain
``soft_loss`` and ``hard_loss`` (the KD term and the cross-entropy before their weights,
averaged like the Trainer's ``loss``), as TRL's trainers log theirs."""
from __future__ import annotations

import torch
from transformers import Trainer

from ptcore.integrations.hf.loss import LMDistillLoss

__all__ = ["DistillTrainer"]

_BATCH_KEYS = ("input_ids", "attention_mask", "labels", "teacher_values", "teacher_indices")


class DistillTrainer(Trainer):
    """A ``transformers.Trainer`` whose loss is :class:`LMDistillLoss` of ``model`` (the
    student) against ``teacher_model`` (moved to the training device, kept in eval mode, never
    trained). ``distill``: LMDistillLoss's options (temperature, divergence, beta,
    hard_weight, soft_weight, tail_bucket, chunk_size). Without a teacher, batches must carry
    ``teacher_values`` and ``teacher_indices`` (``[B, L - 1, K]``, a top-k teacher), or
    ``soft_weight`` must be 0 (pass ``remove_unused_columns=False`` in the arguments so that the
    Trainer keeps those columns). Under DDP (``torchrun``, ``accelerate launch``) the student's
    hidden states come from a forward through the DDP wrapper (its head on the last position
    only), so gradients are all-reduced as without ptcore; FSDP and DeepSpeed shard the
    parameters the fused loss reads outside that forward, and are refused."""

    def __init__(self, *args, teacher_model=None, distill: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise NotImplementedError("DistillTrainer does not run under FSDP or DeepSpeed: "
                                      "they shard the lm_head weight that the fused loss reads "
                                      "outside the model's forward; use DDP (torchrun)")
        if teacher_model is not None:
            teacher_model = teacher_model.to(self.args.device).eval()
            teacher_model.requires_grad_(False)
        self.distill_loss = LMDistillLoss(self.model, teacher_model, **(distill or {}))
        self._parts, self._part_calls = None, 0  # the training parts since the last log
        # Have the Trainer count the target tokens of each accumulated batch
        # (num_items_in_batch), as it does for a model whose own loss takes that count.
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        unknown = sorted(set(inputs) - set(_BATCH_KEYS))
        if unknown:
            raise ValueError(f"DistillTrainer does not use the batch keys {unknown} (it takes "
                             f"{', '.join(_BATCH_KEYS)})")
        hidden = None
        if model is not self.distill_loss.student.model:  # wrapped (DDP): forward through it
            hidden = self.distill_loss.student.hidden_through(
                model, inputs["input_ids"], inputs.get("attention_mask"))
        loss, parts = self.distill_loss(**inputs, num_items_in_batch=num_items_in_batch,
                                        return_parts=True, student_hidden=hidden)
        # Normalised over the whole accumulated batch: the Trainer must not divide again.
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        if self._tokens_across_processes(num_items_in_batch):
            # the count is every process's (Trainer.compute_loss does the same): DDP's mean
            # of the gradients would otherwise divide by the processes once too often
            loss = loss * self.accelerator.num_processes
        if model.training:  # summed as tensors: no device sync per micro-batch
            both = torch.stack([parts["soft"], parts["hard"]]).float()
            self._parts = both if self._parts is None else self._parts + both
            self._part_calls += 1
        return (loss, {}) if return_outputs else loss

    def _tokens_across_processes(self, num_items_in_batch) -> bool:
        return (self.args.average_tokens_across_devices and num_items_in_batch is not None
                and self.accelerator.num_processes > 1)

    def log(self, logs: dict, *args, **kwargs) -> None:
        """The Trainer's log, with the parts' mean per optimizer step where it logs the
        training loss: a step's value is the sum over its micro-batches when each is
        normalised over the accumulated batch, else their mean."""
        if "loss" in logs and self._part_calls:
            per_step = self.args.gradient_accumulation_steps if self.loss_is_scaled_for_ga else 1
            parts = self._parts * per_step / self._part_calls
            if self.accelerator.num_processes > 1:  # log() runs on every process
                # each process's parts are its tokens' share of the count of all processes'
                # tokens (summed), or the mean over its own tokens (averaged)
                parts = self.accelerator.reduce(parts, "sum")
                if not (self.loss_is_scaled_for_ga and self.args.average_tokens_across_devices):
                    parts = parts / self.accelerator.num_processes
            soft, hard = parts.tolist()
            if self.distill_loss.fn.options["soft_weight"] > 0:
                logs["soft_loss"] = soft
            logs["hard_loss"] = hard
            self._parts, self._part_calls = None, 0
        super().log(logs, *args, **kwargs)
