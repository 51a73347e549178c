"""A-GEM, ER-ACE, MAS, GDumb and APER under DDP (2 processes, gloo on CPU): each rank ends with the same
model, memory and accuracy matrix (A-GEM projects the gradient DDP averaged, against a
reference batch every rank draws alike; MAS's importance is computed on each rank's shard
and reduced, so a rank that kept its own would drift apart), and MAS's importance of sharded
data equals one process's over all of it."""

import torch
from ddp_methods_worker import METHODS, worker
from test_incremental_helpers import scenario, tiny_model

from tests.helpers import run_ranks

from ptcore.strategies.incremental.mas import importance
from ptcore.strategies.incremental.plan import make_plan

TIMEOUT_S = 240


def test_new_methods_agree_across_ranks(tmp_path):
    run_ranks(worker, tmp_path, timeout=TIMEOUT_S)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    for method in METHODS:
        a, b = r0[method], r1[method]
        assert a["R"] == b["R"] and a["memory"] == b["memory"], method
        for n in a["model"]:
            torch.testing.assert_close(a["model"][n], b["model"][n], msg=f"{method}: {n}")
        assert a["R"][-1][0] is not None
    assert r0["gdumb"]["memory"]["kept"] and r0["gdumb"]["memory"] == r1["gdumb"]["memory"]
    torch.testing.assert_close(r0["aper"]["means"], r1["aper"]["means"])
    omega = r0["mas"]["omega"]
    assert omega and all(torch.equal(omega[n], r1["mas"]["omega"][n]) for n in omega)
    # the last task's importance under DDP (each rank half the samples) = one process's
    train, test = scenario()
    model = tiny_model(6)
    model.load_state_dict(r0["mas"]["model"])
    data = make_plan(list(train[:3]), list(test[:3]), None, 2).remap(train[2])
    single = importance(model, data, device=torch.device("cpu"))
    for n, w in single.items():
        torch.testing.assert_close(r0["mas"]["fresh"][n], w, rtol=1e-4, atol=1e-9)
