"""Checkpoint policy: keep-last, best-k by a metric, early stopping; resumed runs keep and
stop as uninterrupted ones."""
import json

import pytest
import torch

from ptcore.data import train_val_test_split
from ptcore.engine import evaluate, fit, load_checkpoint
from ptcore.engine.policy import CheckpointPolicy
from tests.engine.tiny import tiny_digits, tiny_net


def _fit(out, model=None, lr=0.05, epochs=4, **kw):
    train, val, _ = train_val_test_split(tiny_digits(240), 0.25, 0.0, seed=0)
    model = model or tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return fit(model, train, opt, epochs=epochs, batch_size=16, val_data=val, out_dir=out,
               progress=False, **kw), val


def test_best_k_and_keep_last_files_hold_those_epochs(tmp_path):
    history, val = _fit(tmp_path, keep_best=2, best_metric="val_accuracy", best_mode="max",
                        keep_last=2, epochs=4)
    # Reference ranking written apart: highest accuracy first, the earlier epoch on ties.
    acc = [h["val_accuracy"] for h in history]
    best = sorted(range(4), key=lambda i: (-acc[i], i))[:2]
    names = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert names == sorted({"last.pt", "epoch-0003.pt", "epoch-0004.pt",
                            *(f"best-epoch-{i + 1:04d}.pt" for i in best)})
    index = json.loads((tmp_path / "best.json").read_text())
    assert [r["epoch"] for r in index] == [i + 1 for i in best]
    for i in best:  # each file holds that epoch's weights: evaluating it gives its accuracy
        ckpt = load_checkpoint(tmp_path / f"best-epoch-{i + 1:04d}.pt")
        assert ckpt["epoch"] == i + 1
        model = tiny_net(seed=3)
        model.load_state_dict(ckpt["model"])
        assert evaluate(model, val)["accuracy"] == pytest.approx(acc[i])


def test_early_stopping_with_patience_and_resume_of_a_stopped_run(tmp_path):
    # lr 0: the validation loss never improves strictly after the first epoch.
    history, _ = _fit(tmp_path / "flat", lr=0.0, epochs=10, patience=2)
    assert len(history) == 3
    again, _ = _fit(tmp_path / "flat", lr=0.0, epochs=10, patience=2, resume=True)
    assert len(again) == 3  # a stopped run stays stopped
    # A learning run improves every epoch here and is not stopped.
    learning, _ = _fit(tmp_path / "learn", epochs=3, patience=1)
    assert len(learning) == 3
    assert learning[-1]["val_loss"] < learning[0]["val_loss"]


def test_policy_ranking_and_stop_against_hand_worked_histories():
    h = [{"val_loss": v} for v in (3.0, 2.0, 2.0, float("nan"), 2.5)]
    p = CheckpointPolicy(keep_best=2, patience=3)
    assert p.ranking(h) == [1, 2, 4, 0, 3]
    assert p.should_stop(h)  # best at epoch index 1, three epochs since
    assert not p.should_stop(h[:4])
    q = CheckpointPolicy(best_metric="val_loss", best_mode="max", patience=1)
    assert q.ranking(h[:3]) == [0, 1, 2] and q.should_stop(h[:2])
    with pytest.raises(ValueError, match="not among the epoch metrics"):
        CheckpointPolicy(best_metric="val_top5").ranking(h)


@pytest.mark.parametrize("kw, msg", [
    ({"best_mode": "up", "keep_best": 1}, "best_mode"),
    ({"best_metric": "accuracy", "keep_best": 1}, "epoch metric"),
    ({"keep_best": -1}, "keep_best"), ({"keep_last": 1.5}, "keep_last"),
    ({"patience": 0}, "patience"), ({"patience": True}, "patience"),
])
def test_bad_policy_settings_fail_before_training(kw, msg):
    model = tiny_net()
    with pytest.raises(ValueError, match=msg):
        fit(model, tiny_digits(16), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
            batch_size=8, progress=False, **kw)


def test_policy_needs_what_it_ranks_by(tmp_path):
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="needs validation data"):
        fit(model, tiny_digits(16), opt, epochs=1, batch_size=8, progress=False,
            out_dir=tmp_path, patience=2)
    with pytest.raises(ValueError, match="output folder"):
        fit(model, tiny_digits(16), opt, epochs=1, batch_size=8, progress=False, keep_last=1)
    history = fit(model, tiny_digits(16), opt, epochs=2, batch_size=8, progress=False,
                  out_dir=tmp_path, keep_best=1, best_metric="train_loss")
    assert json.loads((tmp_path / "best.json").read_text())[0]["train_loss"] == min(
        h["train_loss"] for h in history)
