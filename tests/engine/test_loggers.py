"""CSV and TensorBoard loggers: what they record, read back from the files (TensorBoard's
own event reader), and that a resumed run's files equal an uninterrupted run's."""
import csv

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ptcore.engine import fit
from tests.engine.tiny import tiny_digits, tiny_net


class _Interrupt(Exception):
    pass


def _run(out, *, epochs=3, stop_at=None, resume=False, log=("csv", "tensorboard")):
    data = tiny_digits(96)  # 6 batches of 16: 6 optimizer steps an epoch
    model = tiny_net()

    def interrupt(epoch, m):
        if epoch == stop_at:
            raise _Interrupt

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return fit(model, data, opt, epochs=epochs, batch_size=16, schedule="constant",
               val_data=tiny_digits(48), out_dir=out, resume=resume, progress=False,
               on_epoch_start=[interrupt], log=log, log_every=2)


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _scalars(out, tag):
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_csv_and_tensorboard_record_steps_and_epochs(tmp_path):
    history = _run(tmp_path)
    steps = _csv(tmp_path / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(2, 19, 2))
    assert [int(r["epoch"]) for r in steps] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(float(r["lr"]) == pytest.approx(0.05) for r in steps)
    assert all(float(r["samples_per_s"]) > 0 for r in steps)
    epochs = _csv(tmp_path / "epochs.csv")
    assert [float(r["val_accuracy"]) for r in epochs] == [h["val_accuracy"] for h in history]
    tb_loss = _scalars(tmp_path, "step/loss")
    assert [s for s, _ in tb_loss] == list(range(2, 19, 2))
    assert [v for _, v in tb_loss] == pytest.approx([float(r["loss"]) for r in steps], rel=1e-6)
    tb_acc = _scalars(tmp_path, "epoch/val_accuracy")
    assert tb_acc == [(6, pytest.approx(h["val_accuracy"])) for h in history[:1]] + [
        (s, pytest.approx(h["val_accuracy"])) for s, h in zip((12, 18), history[1:])]
    assert {"epoch/train_loss", "epoch/lr", "step/samples_per_s", "step/lr"} <= set(
        EventAccumulator(str(tmp_path / "tensorboard")).Reload().Tags()["scalars"])


def test_resumed_logs_equal_an_uninterrupted_runs(tmp_path):
    _run(tmp_path / "a")
    with pytest.raises(_Interrupt):
        _run(tmp_path / "b", stop_at=2)
    _run(tmp_path / "b", resume=True)
    a, b = _csv(tmp_path / "a" / "steps.csv"), _csv(tmp_path / "b" / "steps.csv")
    assert [(r["step"], r["loss"]) for r in a] == [(r["step"], r["loss"]) for r in b]
    assert len(_csv(tmp_path / "b" / "epochs.csv")) == 3
    # Events at steps the resumed run wrote again are purged, not duplicated.
    assert _scalars(tmp_path / "b", "step/loss") == _scalars(tmp_path / "a", "step/loss")
    assert [s for s, _ in _scalars(tmp_path / "b", "epoch/val_loss")] == [6, 12, 18]


def test_a_run_started_over_in_the_folder_hides_the_old_events(tmp_path):
    _run(tmp_path, epochs=1)
    (tmp_path / "last.pt").unlink()  # what --overwrite does
    _run(tmp_path, epochs=1)
    assert [s for s, _ in _scalars(tmp_path, "step/loss")] == [2, 4, 6]
    assert [r["step"] for r in _csv(tmp_path / "steps.csv")] == ["2", "4", "6"]


def test_jsonl_only_by_default_and_bad_logger_settings(tmp_path):
    _run(tmp_path / "d", epochs=1, log=("jsonl",))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["last.pt", "metrics.jsonl"]
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = tiny_digits(16)
    for kw, msg in [({"log": ["wandb"]}, "unknown logger"), ({"log": "csv,tb"}, "unknown"),
                    ({"log": ["csv"], "log_every": 0}, "log_every"),
                    ({"log": ["tensorboard"]}, "output folder")]:
        with pytest.raises(ValueError, match=msg):
            fit(model, data, opt, epochs=1, batch_size=8, progress=False, **kw)


def test_the_logged_lr_is_the_largest_groups(tmp_path):
    # layer-wise decay puts the smallest lr first (the layer furthest from the head); the
    # lr a user set, and reads back in the logs, is the head's
    model = tiny_net()
    groups = [{"params": model[0].parameters(), "lr": 0.0005},
              {"params": model[2].parameters(), "lr": 0.005},
              {"params": model[-1].parameters(), "lr": 0.05}]
    history = fit(model, tiny_digits(32), torch.optim.SGD(groups), epochs=1, batch_size=16,
                  schedule="constant", out_dir=tmp_path, progress=False,
                  log=("csv", "tensorboard"), log_every=1)
    assert history[0]["lr"] == pytest.approx(0.05)
    assert [float(r["lr"]) for r in _csv(tmp_path / "steps.csv")] == pytest.approx([0.05] * 2)
    assert [v for _, v in _scalars(tmp_path, "step/lr")] == pytest.approx([0.05] * 2)
