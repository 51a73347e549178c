"""LR schedules and verified atomic checkpoints."""
import pytest
import torch

from ptcore.engine import (load_checkpoint, make_schedule, save_checkpoint, schedule_factor,
                           state_digest)


def _curve(name, total=100, warmup=0.1):
    return [schedule_factor(name, s, total, warmup) for s in range(total)]


def test_schedule_shapes():
    cos = _curve("cosine")
    assert cos[0] < cos[5] < cos[10] == pytest.approx(1.0, abs=0.01)  # linear warm-up
    assert cos[-1] < 0.01 and all(a >= b for a, b in zip(cos[10:], cos[11:]))
    stlr = _curve("slanted_triangular")
    assert stlr[0] == pytest.approx(1 / 32) and max(stlr) == pytest.approx(1.0)
    assert stlr.index(max(stlr)) == 10 and stlr[-1] < 0.1
    oc = _curve("one_cycle", warmup=0.3)
    assert oc[0] == pytest.approx(1 / 25) and oc.index(max(oc)) == 30 and oc[-1] < 0.01
    assert _curve("constant", warmup=0.0) == [1.0] * 100


def test_schedule_keeps_group_ratios():
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 1.0},
                           {"params": [params[1]], "lr": 0.25}])
    sched = make_schedule("cosine", opt, 20, 0.1)
    for _ in range(7):
        opt.step()
        sched.step()
        assert opt.param_groups[1]["lr"] == pytest.approx(0.25 * opt.param_groups[0]["lr"])
    with pytest.raises(ValueError, match="warmup"):
        make_schedule("cosine", opt, 20, 1.5)


def test_checkpoint_round_trip_and_verification(tmp_path):
    state = {"w": torch.randn(4, 3), "n": torch.tensor(7), "h": torch.randn(2).half()}
    path = save_checkpoint(tmp_path / "c.pt", state, epoch=3, extra={"a": 1})
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3 and all(torch.equal(ckpt["model"][k], state[k]) for k in state)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp files left behind
    # a tampered tensor fails verification
    bad = dict(ckpt, model=dict(ckpt["model"], w=ckpt["model"]["w"] + 1))
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="failed verification"):
        load_checkpoint(tmp_path / "bad.pt")
    # a torn file is reported as such
    (tmp_path / "torn.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="unreadable or corrupt"):
        load_checkpoint(tmp_path / "torn.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a ptcore checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    assert state_digest(state) != state_digest(dict(state, n=torch.tensor(8)))
