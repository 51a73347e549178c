"""One process of the 2-process DistillTrainer test (test_hf_trainer_ddp.py): one SGD step
on this rank's 2 of the 4 sequences under DDP (gloo), the student's weights saved by each rank."""
import os

import torch


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from transformers import DataCollatorForLanguageModeling, TrainingArguments

    from tests.integrations.hf_fixtures import trainer_case
    from ptcore.integrations.hf import DistillTrainer

    student, teacher, tokenizer, data = trainer_case()
    args = TrainingArguments(
        output_dir=os.path.join(out, "trainer"), per_device_train_batch_size=2, max_steps=1,
        learning_rate=0.1, optim="sgd", lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=0.0, report_to=[], save_strategy="no", use_cpu=True,
        disable_tqdm=True, seed=0, ddp_backend="gloo", logging_steps=1)
    trainer = DistillTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data,
                             data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                             distill={"temperature": 2.0, "hard_weight": 0.5})
    trainer.train()
    torch.save({"world": trainer.accelerator.num_processes, "wrapped": type(
        trainer.model_wrapped).__name__, "student": student.state_dict(),
        "logs": [h for h in trainer.state.log_history if "loss" in h]},
        os.path.join(out, f"rank{rank}.pt"))
