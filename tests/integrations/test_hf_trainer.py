"""DistillTrainer: a transformers.Trainer whose loss is ptcore's fused distillation loss.
One SGD step with 2 accumulated micro-batches of 2 sequences of different lengths moves the
student exactly as one batch of 4, and both as the loss's own gradient says."""
import copy

import torch

from tests.integrations.hf_fixtures import bpe_tokenizer, stdlib_text, tiny

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
    text = stdlib_text(("json",))
    tokenizer = bpe_tokenizer(text, vocab=320)
    V = len(tokenizer)
    data = [tokenizer(text[a:a + n]) for a, n in ((0, 90), (500, 40), (900, 160), (1500, 60))]
    student, teacher = tiny("llama", V, seed=1), tiny("llama", V, seed=2, hidden=48)
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
