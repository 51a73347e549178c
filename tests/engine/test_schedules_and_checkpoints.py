"""LR schedules (torch.optim.lr_scheduler against closed forms) and verified atomic
checkpoints."""
import pytest
import torch

import math

from ptcore.engine import load_checkpoint, make_schedule, save_checkpoint, state_digest
from ptcore.engine.checkpoint import payload_digest
from ptcore.engine.schedules import resume_schedule


def _expected(name, s, total, warmup):
    """The closed forms, written apart from ptcore.engine.schedules (which steps torch's
    chained schedulers)."""
    w = 0 if warmup == 0 else max(1, round(warmup * total))
    if name == "slanted_triangular":
        cut = max(1, w)
        p = s / cut if s < cut else 1 - (s - cut) / max(1, total - cut)
        return 1 / 32 + p * (1 - 1 / 32)
    if name == "one_cycle":
        if s < w:
            return 0.04 + 0.96 * (1 - math.cos(math.pi * s / w)) / 2
        return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * (s - w) / max(1, total - w))) / 2
    if s < w:
        return (s + 1) / (w + 1)
    if name == "constant":
        return 1.0
    return (1 + math.cos(math.pi * (s - w) / (total - w))) / 2  # cosine


def _optimizer(lrs=(0.5, 0.125)):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)],
                           momentum=0.9)


@pytest.mark.parametrize("name", ["constant", "cosine", "one_cycle", "slanted_triangular"])
def test_schedules_follow_their_closed_forms_and_keep_group_ratios(name):
    for total, warmup in ((1, 0.0), (7, 0.3), (10, 0.1), (37, 0.0), (250, 0.05), (400, 0.5)):
        opt = _optimizer()
        sched = make_schedule(name, opt, total, warmup)
        for s in range(total + 1):  # the rate at step `total` is what the last record shows
            want = _expected(name, s, total, warmup)
            lr0, lr1 = (g["lr"] for g in opt.param_groups)
            assert lr0 == pytest.approx(0.5 * want, rel=1e-12, abs=1e-15), (total, warmup, s)
            assert lr1 == pytest.approx(lr0 / 4, rel=1e-12, abs=1e-15), (total, warmup, s)
            opt.step()
            sched.step()
    with pytest.raises(ValueError, match="warmup"):
        make_schedule(name, opt, 20, 1.5)


@pytest.mark.parametrize("name", ["constant", "cosine", "one_cycle", "slanted_triangular"])
def test_a_schedule_resumes_exactly_and_follows_a_longer_run(name, tmp_path):
    def run(total, steps, opt=None):
        opt = opt or _optimizer()
        sched = make_schedule(name, opt, total, 0.2)
        for _ in range(steps):
            opt.step()
            sched.step()
        return opt, sched

    opt, sched = run(30, 11)
    path = save_checkpoint(tmp_path / "c.pt", {}, scheduler=sched.state_dict(),
                           optimizer=opt.state_dict())
    ckpt = load_checkpoint(path)  # through the file: plain values, hashed by the digest
    assert payload_digest(ckpt) == ckpt["sha256"]
    full = [run(30, s)[0].param_groups[1]["lr"] for s in range(11, 31)]
    for total, want in ((30, full), (50, [run(50, s)[0].param_groups[1]["lr"]
                                          for s in range(11, 31)])):
        opt = _optimizer()
        sched = make_schedule(name, opt, total, 0.2)
        opt.load_state_dict(ckpt["optimizer"])
        resume_schedule(sched, opt, ckpt["scheduler"], same_length=total == 30)
        got = []
        for _ in range(20):
            got.append(opt.param_groups[1]["lr"])
            opt.step()
            sched.step()
        assert got == want, (name, total)  # bitwise: the same float operations


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
