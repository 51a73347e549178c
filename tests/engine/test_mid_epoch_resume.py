"""Checkpoints every N optimizer steps (save_every): a run stopped in the middle of an epoch
and resumed from its last mid-epoch checkpoint ends bit for bit where an uninterrupted run
ends (weights, optimizer, EMA, metrics, step logs), without loading the skipped batches."""
import csv

import pytest
import torch
from torch.utils.data import Dataset

from ptcore.engine import (CHECKPOINT, METRICS, classification_step, fit, load_checkpoint,
                           read_metrics)
from tests.engine.tiny import tiny_digits, tiny_net

N, BATCH, EPOCHS = 96, 8, 3  # 12 batches an epoch


class _Stop(Exception):
    pass


class _Noisy(Dataset):
    """Digits with Gaussian noise drawn when loaded (a random augmentation); counts loads."""

    def __init__(self, data):
        self.data, self.loaded = data, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.loaded += 1
        x, y = self.data[i]
        return x + 0.1 * torch.randn_like(x), y


def _run(out, *, stop_after=None, resume=False, num_workers=0, **kw):
    """Train; with ``stop_after``, raise before training batch ``stop_after + 1``."""
    model = tiny_net(dropout=0.3)  # dropout: the generators must be restored exactly
    data = _Noisy(tiny_digits(N))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    trained = []

    def step(m, batch):
        if len(trained) == stop_after:
            raise _Stop
        trained.append(1)
        return classification_step(m, batch)

    fit(model, data, opt, epochs=EPOCHS, batch_size=BATCH, step_fn=step, schedule="cosine",
        warmup=0.2, out_dir=out, resume=resume, progress=False, num_workers=num_workers,
        val_data=tiny_digits(24), log="csv", log_every=1, **kw)
    return model, opt, data.loaded


def _same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _records(path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(path)]


def _steps(out):
    with open(out / "steps.csv", newline="") as f:
        return [{k: r[k] for k in ("step", "epoch", "loss", "lr")} for r in csv.DictReader(f)]


@pytest.mark.parametrize("accumulate,num_workers,ema", [(2, 0, 0.9), (1, 2, None)])
def test_resume_from_a_mid_epoch_checkpoint_is_bitwise_exact(tmp_path, accumulate,
                                                             num_workers, ema):
    kw = dict(accumulate=accumulate, ema=ema, keep_last=1)
    full_model, full_opt, _ = _run(tmp_path / "full", **kw)  # no mid-epoch checkpoints
    stopped = tmp_path / "stopped"
    with pytest.raises(_Stop):  # stopped 9 batches into epoch 1 (0-based)
        _run(stopped, stop_after=12 + 9, save_every=2, num_workers=num_workers, **kw)
    ckpt = load_checkpoint(stopped / CHECKPOINT)
    # The last step that is a multiple of 2 before the stop ended batch 8 of epoch 1.
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 8)
    assert sorted(p.name for p in stopped.iterdir()) == [
        "epoch-0001.pt", "epochs.csv", CHECKPOINT, METRICS, "steps.csv"]
    model, opt, loaded = _run(stopped, resume=True, save_every=2, num_workers=num_workers,
                              **kw)
    if not num_workers:  # (workers load copies of the dataset object)
        assert loaded == N * (EPOCHS - 1) - BATCH * ckpt["batch"]  # skipped, not loaded
    _same(full_model.state_dict(), model.state_dict(), "model")
    _same(full_opt.state_dict(), opt.state_dict(), "optimizer")
    a, b = load_checkpoint(tmp_path / "full" / CHECKPOINT), load_checkpoint(stopped / CHECKPOINT)
    for part in ("scheduler", "ema", "rng", "epoch", "batch"):
        _same(a.get(part), b.get(part), part)
    assert _records(tmp_path / "full" / METRICS) == _records(stopped / METRICS)
    assert [r["epoch"] for r in _records(stopped / METRICS)] == [0, 1, 2]
    assert _steps(tmp_path / "full") == _steps(stopped)
    assert sorted(p.name for p in stopped.iterdir()) == [  # keep_last: epoch copies only
        "epoch-0003.pt", "epochs.csv", CHECKPOINT, METRICS, "steps.csv"]


def test_save_every_is_checked():
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="save_every"):
            fit(model, tiny_digits(8), opt, epochs=1, batch_size=8, save_every=bad)
    with pytest.raises(ValueError, match="output folder"):
        fit(model, tiny_digits(8), opt, epochs=1, batch_size=8, save_every=5)
