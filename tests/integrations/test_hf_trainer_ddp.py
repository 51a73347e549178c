"""DistillTrainer under DDP (2 processes, gloo on CPU): one SGD step with 2 sequences per
process moves the student exactly as the loss's own gradient over all 4 sequences says, on
both ranks, and the logged loss and parts are those of all 4; the hidden states come from a forward through the DDP wrapper (calling the base
model past it would skip DDP's all-reduce, and each rank would step on its own half)."""
import copy

import torch

from tests.helpers import run_ranks
from tests.integrations.hf_fixtures import trainer_case

from ptcore.integrations.hf import LMDistillLoss

TIMEOUT_S = 240


def test_ddp_step_equals_the_whole_batch_step(tmp_path):
    from tests.integrations.ddp_trainer_worker import worker

    run_ranks(worker, tmp_path, timeout=TIMEOUT_S)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["wrapped"] == "DistributedDataParallel"
    student, teacher, tokenizer, data = trainer_case()
    start = copy.deepcopy(student)
    padded = tokenizer.pad(data, return_tensors="pt")
    loss, parts = LMDistillLoss(start, teacher, temperature=2.0, hard_weight=0.5)(
        padded["input_ids"], padded["attention_mask"], return_parts=True)
    loss.backward()
    for name, p0 in start.named_parameters():
        want = p0.detach() - 0.1 * p0.grad
        for r in (r0, r1):
            torch.testing.assert_close(r["student"][name], want, rtol=1e-5, atol=1e-6,
                                       msg=name)
    assert not torch.equal(r0["student"]["model.norm.weight"], start.model.norm.weight)
    # the logged step: the loss and its parts over all 4 sequences, not rank 0's share
    (logged,) = r0["logs"]
    assert abs(logged["loss"] - loss.item()) < 1e-4 * loss.item()
    assert abs(logged["hard_loss"] - parts["hard"].item()) < 1e-4 * parts["hard"].item()
    assert abs(logged["soft_loss"] - parts["soft"].item()) < 1e-4 * parts["soft"].item()
