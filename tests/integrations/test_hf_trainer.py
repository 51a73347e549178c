"""DistillTrainer: a transformers.Trainer whose loss is ptcore's fused distillation loss.
One SGD step with 2 accumulated micro-batches of 2 sequences of different lengths moves the
student exactly as one batch of 4, and both as the loss's own gradient says."""
import copy

import torch

from tests.integrations.hf_fixtures import trainer_case

from ptcore.integrations.hf import DistillTrainer, LMDistillLoss


def _sgd_step(student, teacher, tokenizer, data, tmp_path, batch, accumulate):
    from transformers import DataCollatorForLanguageModeling, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path / f"b{batch}x{accumulate}"), per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulate, max_steps=1, learning_rate=0.1, optim="sgd",
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    trainer = DistillTrainer(model=student, teacher_model=teacher, args=args,
                             train_dataset=data,
                             data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                             distill={"temperature": 2.0, "hard_weight": 0.5})
    trainer.train()
    return student


def test_gradient_accumulation_weighs_every_token_alike(tmp_path):
    student, teacher, tokenizer, data = trainer_case()
    start = copy.deepcopy(student)
    one = _sgd_step(copy.deepcopy(student), teacher, tokenizer, data, tmp_path, 4, 1)
    two = _sgd_step(copy.deepcopy(student), teacher, tokenizer, data, tmp_path, 2, 2)
    # The loss's own gradient over the 4 sequences, padded together.
    padded = tokenizer.pad(data, return_tensors="pt")
    LMDistillLoss(start, teacher, temperature=2.0, hard_weight=0.5)(
        padded["input_ids"], padded["attention_mask"]).backward()
    for (name, p0), p1, p2 in zip(start.named_parameters(), one.parameters(), two.parameters()):
        want = p0.detach() - 0.1 * p0.grad
        torch.testing.assert_close(p1.detach(), want, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(p2.detach(), want, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(one.model.norm.weight, start.model.norm.weight)


def test_the_logs_carry_the_soft_and_hard_parts(tmp_path):
    """Each logged step's loss is soft_weight · soft_loss + hard_weight · hard_loss, with 2
    micro-batches accumulated, and hard_loss is the cross-entropy of that step's batch."""
    from transformers import DataCollatorForLanguageModeling, TrainingArguments

    student, teacher, tokenizer, data = trainer_case()
    start = copy.deepcopy(student)
    args = TrainingArguments(
        output_dir=str(tmp_path / "logs"), per_device_train_batch_size=2,
        gradient_accumulation_steps=2, max_steps=2, learning_rate=0.1, optim="sgd",
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
        seed=0)
    trainer = DistillTrainer(model=student, teacher_model=teacher, args=args,
                             train_dataset=data,
                             data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                             distill={"temperature": 2.0, "hard_weight": 0.5})
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2
    for h in logged:
        assert abs(h["loss"] - (h["soft_loss"] + 0.5 * h["hard_loss"])) < 1e-3 * h["loss"]
    assert logged[0]["hard_loss"] > 4.0  # a random student's CE, near log V = 5.8
    padded = tokenizer.pad(data, return_tensors="pt")
    _, parts = LMDistillLoss(start, teacher, temperature=2.0, hard_weight=0.5)(
        padded["input_ids"], padded["attention_mask"], return_parts=True)
    # The first step saw all 4 sequences (in another order): the same token-weighted CE.
    assert abs(logged[0]["hard_loss"] - parts["hard"].item()) < 1e-4 * parts["hard"].item()
