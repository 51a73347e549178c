"""A 2-process gloo DDP run gives the same weights as one process with the same global
batch (the engine's sampler makes the two see the same samples per step)."""
import os

import torch

from ptcore.engine import fit
from tests.engine.tiny import tiny_digits, tiny_net
from tests.helpers import run_ranks

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


def test_two_process_gloo_matches_one_process(tmp_path):
    out = tmp_path / "ddp.pt"
    run_ranks(_worker, out)
    ddp = torch.load(out, weights_only=True)
    single = _train(GLOBAL_BATCH).state_dict()
    for k, v in single.items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)
    # and not trivially: training moved the weights
    assert not torch.equal(single["7.weight"], tiny_net().state_dict()["7.weight"])
