"""Incremental under DDP (2 processes, gloo on CPU): the head grows before the model is
wrapped, exemplars and the memory are identical on every rank, the Fisher is reduced over
the ranks' shards (equal to the Fisher of the whole data in one process), and the ranks
end with the same model."""

import torch
import torch.nn.functional as F
from test_incremental_helpers import ddp_worker, scenario, tiny_model

from tests.helpers import run_ranks

from ptcore.strategies import Incremental
from ptcore.strategies.incremental.ewc import EWC
from ptcore.strategies.incremental.plan import make_plan

TIMEOUT_S = 150


def test_two_process_gloo_run_agrees_across_ranks(tmp_path):
    run_ranks(ddp_worker, tmp_path, timeout=TIMEOUT_S)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    train, test = scenario()
    assert r0["world"] == r1["world"] == 2
    assert r0["head"] == r1["head"] == 6
    assert r0["memory"] == r1["memory"] and len(r0["memory"]["exemplars"]) == 6
    assert r0["R"] == r1["R"]
    for key in ("fisher", "fresh_fisher", "model"):
        assert r0[key].keys() == r1[key].keys()
        for n in r0[key]:
            torch.testing.assert_close(r0[key][n], r1[key][n], msg=f"{key}[{n}] differs")
    assert all(f.abs().sum() > 0 for f in r0["fisher"].values() if f.dtype.is_floating_point)
    assert r0["bic_memory"] == r1["bic_memory"] and r0["bic_layers"] == r1["bic_layers"]
    assert r0["bic_R"] == r1["bic_R"] and len(r0["bic_layers"]) == 2
    for row, stored in r0["der"].items():
        torch.testing.assert_close(r1["der"][row], stored)
    # RanPAC: each rank's shard of the features, G and Q summed = one process on all data
    torch.testing.assert_close(r0["ranpac_G"], r1["ranpac_G"])
    single = Incremental(tiny_model(2), method="ranpac", classes=[0, 1], ranpac_dim=64,
                         progress=False)
    single.fit(list(train[:3]), list(test[:3]))
    solved = single.methods["ranpac"].ranpac
    torch.testing.assert_close(r0["ranpac_G"], solved.G, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(r0["ranpac_W"], solved.W, rtol=1e-4, atol=1e-5)

    model = tiny_model(6)
    model.load_state_dict(r0["model"])
    single = EWC(1.0)
    data = make_plan(list(train[:3]), list(test[:3]), None, 2).remap(train[2])
    single.update(model, data, F.cross_entropy, device="cpu", progress=False)
    for n, f in single.fisher.items():
        torch.testing.assert_close(r0["fresh_fisher"][n], f, rtol=1e-4, atol=1e-9)
