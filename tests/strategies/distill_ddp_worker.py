"""One process of the 2-process gloo test of distillation with a term that owns a module
(tests/strategies/test_distill_ddp.py): kd+crd for 2 epochs, then 1 epoch into a folder and
resumed to 2; the trained module (student, CRD's heads, banks and Z) and how many samples
the teacher ran on are saved for the test to compare."""
import os

import torch
import torch.distributed as dist
from test_distill import SEED, make, small, student_net, teacher_net
from torch.utils.data import Subset

from ptcore.data import digits_dataset, train_val_test_split

CRD = {"method": "kd+crd", "crd_negatives": 16, "crd_dim": 8, "schedule": "constant",
       "warmup": 0.0, "batch_size": 8}  # per process: 2 × 8
N = 64  # training samples (20 labelled, 44 unlabelled)


def crd_data():
    """(labelled, unlabelled) 8×8 digits: the first 20 and the next 44 training images."""
    train, _, _ = train_val_test_split(digits_dataset(8), seed=SEED)
    return small(train, 20), Subset(train, range(20, N))


def teacher():
    torch.manual_seed(SEED)
    return teacher_net()


def _states(d):
    return {k: v.clone() for k, v in d.trained.state_dict().items()}


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    data, net = crd_data(), teacher()
    torch.manual_seed(SEED)
    whole = make(net, student_net(), epochs=2, **CRD)
    summary = whole.fit(*data)
    torch.manual_seed(SEED)
    make(net, student_net(), epochs=1, **CRD).fit(*data, out_dir=os.path.join(out, "run"))
    torch.manual_seed(123)  # the checkpoint's generators, not these, draw the negatives
    resumed = make(net, student_net(), epochs=2, **CRD)
    resumed.fit(*data, out_dir=os.path.join(out, "run"), resume=True)
    torch.save({"world": dist.get_world_size(), "whole": _states(whole),
                "resumed": _states(resumed), "teacher_samples": summary["teacher_samples"],
                "history": summary["history"]}, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()
