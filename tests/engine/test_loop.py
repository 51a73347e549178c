"""The engine loop: learning, metrics, checkpoints, exact resume, accumulation, AMP."""
import json

import pytest
import torch

from ptcore.data import train_val_test_split
from ptcore.engine import (CHECKPOINT, METRICS, evaluate, fit, load_checkpoint, read_metrics,
                           resolve_amp)
from tests.engine.tiny import tiny_digits, tiny_net


def _sgd(model, lr=0.1):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                           momentum=0.9)


def test_fit_learns_and_writes_metrics_and_checkpoints(tmp_path):
    train, val, _ = train_val_test_split(tiny_digits(), 0.2, 0.0, seed=0)
    model = tiny_net()
    history = fit(model, train, torch.optim.AdamW(model.parameters(), 1e-2), epochs=4,
                  batch_size=32, val_data=val, schedule="cosine", warmup=0.1,
                  out_dir=tmp_path, progress=False, meta={"model": "tiny"})
    assert history[-1]["val_accuracy"] > 0.6  # chance is 0.1
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    records = read_metrics(tmp_path / METRICS)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
            "seconds"} <= set(records[0])
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt["epoch"] == 4 and ckpt["meta"] == {"model": "tiny"}
    again = tiny_net(seed=1)
    again.load_state_dict(ckpt["model"])
    assert evaluate(again, val)["accuracy"] == pytest.approx(history[-1]["val_accuracy"])


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_is_exact(tmp_path):
    data = tiny_digits(96)

    def run(out, stop_at=None, resume=False):
        model = tiny_net(dropout=0.3)  # dropout: the RNG state must be restored too

        def interrupt(epoch, m):
            if epoch == stop_at:
                raise _Interrupt

        fit(model, data, _sgd(model), epochs=4, batch_size=16, schedule="cosine",
            warmup=0.2, out_dir=out, resume=resume, on_epoch_start=[interrupt],
            progress=False)
        return model

    full = run(tmp_path / "a")
    with pytest.raises(_Interrupt):
        run(tmp_path / "b", stop_at=2)
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT)["epoch"] == 2
    resumed = run(tmp_path / "b", resume=True)
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    ra, rb = read_metrics(tmp_path / "a" / METRICS), read_metrics(tmp_path / "b" / METRICS)
    assert [r["epoch"] for r in rb] == [0, 1, 2, 3]
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb]


def test_gradient_accumulation_equals_the_large_batch():
    data = tiny_digits(64)
    models = []
    for batch, acc in ((16, 1), (8, 2)):
        model = tiny_net()
        fit(model, data, _sgd(model), epochs=2, batch_size=batch, accumulate=acc,
            progress=False)
        models.append(model)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_step_fn_contract_amp_and_argument_errors():
    data = tiny_digits(32)
    model = tiny_net()
    calls = []

    def step(m, batch):
        x, y = batch
        calls.append(x.shape[0])
        return torch.nn.functional.cross_entropy(m(x).float(), y)  # a bare tensor is fine

    hist = fit(model, data, _sgd(model), epochs=1, batch_size=8, step_fn=step, amp="bf16",
               progress=False)
    assert calls == [8, 8, 8, 8] and set(hist[0]) >= {"train_loss"}
    with pytest.raises(TypeError, match="step_fn must return"):
        fit(model, data, _sgd(model), epochs=1, batch_size=8, step_fn=lambda m, b: 1.0,
            progress=False)
    with pytest.raises(ValueError, match="amp='fp16' needs a CUDA"):
        resolve_amp("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, data, _sgd(model), epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="schedule"):
        fit(model, data, _sgd(model), epochs=1, batch_size=8, schedule="zigzag")
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        fit(model, data, _sgd(model), epochs=1, batch_size=8, resume=True)


def test_evaluate_skips_ignored_labels():
    data = tiny_digits(40)
    model = tiny_net()
    full = evaluate(model, data)
    hidden = [(x, torch.tensor(-100) if i % 2 else y) for i, (x, y) in
              enumerate(data[i] for i in range(40))]
    half = evaluate(model, hidden)
    assert full["count"] == 40 and half["count"] == 20
    assert json.dumps(half)  # plain numbers, ready for JSON
