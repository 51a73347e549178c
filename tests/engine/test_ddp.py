"""A 2-process gloo DDP run gives the same weights as one process with the same global
batch (the engine's sampler makes the two see the same samples per step)."""
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from ptcore.engine import fit
from tests.engine.tiny import tiny_digits, tiny_net

EPOCHS, GLOBAL_BATCH, N = 2, 16, 64


def _train(batch_size, accumulate=1):
    model = tiny_net()
    for p in model[0].parameters():  # a frozen first layer: DDP must leave it out
        p.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                          momentum=0.9)
    fit(model, tiny_digits(N), opt, epochs=EPOCHS, batch_size=batch_size,
        accumulate=accumulate, schedule="cosine", progress=False)
    return model


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world,
                                         timeout=__import__("datetime").timedelta(seconds=60))
    try:
        model = _train(GLOBAL_BATCH // world)
        if rank == 0:
            torch.save(model.state_dict(), out)
    finally:
        torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_matches_one_process(tmp_path):
    out = tmp_path / "ddp.pt"
    ctx = mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail("DDP run did not finish in 240 s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    ddp = torch.load(out, weights_only=True)
    single = _train(GLOBAL_BATCH).state_dict()
    for k, v in single.items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)
    # and not trivially: training moved the weights
    assert not torch.equal(single["7.weight"], tiny_net().state_dict()["7.weight"])
