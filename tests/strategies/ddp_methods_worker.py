"""One process of the 2-process gloo tests of the methods added after the first DDP test
(tests/strategies/test_incremental_ddp_methods.py): each runs 3 tasks under DDP, and what
must agree across processes is saved for the test to compare."""
import os

import torch
import torch.distributed as dist

from test_incremental_helpers import SEED, scenario, tiny_model  # noqa: I001

from ptcore.strategies import Incremental
from ptcore.strategies.incremental.mas import importance

METHODS = {"a-gem": {"agem_batch": 8}, "er-ace": {}, "mas": {"mas_lambda": 0.1}, "gdumb": {},
           "aper": {}}
L2P_BATCH = 8  # per process: 2 × 8 under DDP


def l2p_kw():
    """L2P on the tiny ViT as seeded (not pretrained: what is compared needs no features
    worth prompting, and pretraining it is most of the test's time)."""
    return {"pretrained": False, "epochs": 1}


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    train, test = scenario()
    saved = {}
    for method, kw in METHODS.items():
        torch.manual_seed(SEED)
        inc = Incremental(tiny_model(2), method=method, memory=12, epochs=1, batch_size=8,
                          lr=3e-3, seed=SEED, progress=False, **kw)
        res = inc.fit(list(train[:3]), list(test[:3]))
        saved[method] = {"model": inc.model.state_dict(), "R": res["accuracy_matrix"],
                         "memory": inc.memory and inc.memory.state_dict()}
        if method == "gdumb":  # its own memory: the greedy sampler's picks
            saved[method]["memory"] = inc.methods["gdumb"].memory.state_dict()
        if method == "aper":  # the prototypes of the frozen and the adapted backbone
            saved[method]["means"] = inc.methods["aper"].means
        if method == "mas":  # the importance of the last task's data: sharded, then reduced
            saved[method]["omega"] = inc.methods["mas"].omega
            saved[method]["fresh"] = importance(inc.model, inc.plan.remap(train[2]),
                                                device=torch.device("cpu"))
    saved["world"] = dist.get_world_size()
    torch.save(saved, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def l2p_worker(rank: int, world: int, port: int, out: str) -> None:
    from test_incremental_pretrained import make_l2p

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    train, test = scenario()
    inc = make_l2p(batch_size=L2P_BATCH, **l2p_kw())
    torch.manual_seed(SEED)
    res = inc.fit(list(train[:3]), list(test[:3]))
    torch.save({"world": dist.get_world_size(), "R": res["accuracy_matrix"],
                "pool": inc.methods["l2p"].pool.state_dict(),
                "model": inc.model.model.state_dict()}, os.path.join(out, f"l2p{rank}.pt"))
    dist.destroy_process_group()
