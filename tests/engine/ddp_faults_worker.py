"""One rank of the 2-process gloo fault tests (run by test_ddp_faults.py with torchrun's
environment variables): ``python ddp_faults_worker.py SCENARIO OUT [RESULT]``.

rank1_exits: rank 1 dies (os._exit) mid-epoch; save_fails: rank 0's checkpoint write
raises ENOSPC; interrupted: both stop after batch 3 of epoch 2 (a checkpoint every 2
optimizer steps was written after its batch 2); resume: continue, rank 1 with an empty out
folder (a node-local disk), rank 0 saves the final weights to RESULT;
incremental_save_fails: Incremental's rank 0 hits ENOSPC writing a task's state.pt; log: a
whole run with the CSV and TensorBoard loggers, rank 1 with its own out folder (which must
stay empty)."""
import errno
import os
import sys

import torch

from ptcore.engine import classification_step, fit
from ptcore.runtime import distributed as D
from ptcore.engine import resume as checkpoints
from tests.engine.tiny import tiny_digits, tiny_net

EPOCHS, BATCH, N = 2, 8, 64


def main(scenario: str, out: str, result: str | None = None) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    steps = []

    def step(model, batch):
        steps.append(1)
        if scenario == "rank1_exits" and rank == 1 and len(steps) == 3:
            os._exit(3)
        if scenario == "interrupted" and len(steps) == 4 + 4:  # 4 batches an epoch
            sys.exit(0)
        return classification_step(model, batch)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]))

    if scenario == "save_fails" and rank == 0:
        checkpoints.save_checkpoint = full_disk
    if scenario == "incremental_save_fails":
        return incremental(out, full_disk if rank == 0 else None)
    if scenario in ("resume", "log") and rank == 1:
        out = os.path.join(out, "rank1-local")
    log = ("csv", "tensorboard") if scenario == "log" else ("jsonl",)
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    try:
        fit(model, tiny_digits(N), opt, epochs=EPOCHS, batch_size=BATCH, step_fn=step,
            schedule="cosine", out_dir=out, resume=scenario == "resume", progress=False,
            save_every=2 if scenario in ("interrupted", "resume") else 0,
            log=log, log_every=1)
        if result is not None and rank == 0:
            torch.save(model.state_dict(), result)
    finally:
        D.shutdown()


def incremental(out: str, full_disk) -> None:
    """Two tasks of one epoch each; rank 0's write of task 0's state.pt fails."""
    from ptcore import engine
    from ptcore.strategies import Incremental
    from tests.strategies.test_incremental_helpers import scenario, tiny_model

    if full_disk is not None:
        engine.save_checkpoint = full_disk
    train, test = scenario()
    learner = Incremental(tiny_model(2), method="naive", epochs=1, batch_size=BATCH,
                          progress=False)
    try:
        learner.fit(train[:2], test[:2], out_dir=out)
    finally:
        D.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
