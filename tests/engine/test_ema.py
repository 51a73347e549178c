"""EMA of the weights: equal to the average written out by hand from the weights after each
step, validated beside the model, checkpointed, and resumed exactly."""
import pytest
import torch
import torch.nn.functional as F

from ptcore.engine import CHECKPOINT, evaluate, fit, load_checkpoint
from tests.engine.tiny import tiny_digits, tiny_net


class _Interrupt(Exception):
    pass


def test_ema_matches_a_hand_written_average_and_is_validated(tmp_path):
    decay, data, val = 0.8, tiny_digits(64), tiny_digits(32)
    model = tiny_net()
    before = []  # the weights each step starts from: those after the previous step

    def step(m, batch):
        before.append([p.detach().double().clone() for p in model.parameters()])
        x, y = batch
        return F.cross_entropy(m(x), y)

    history = fit(model, data, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                  epochs=2, batch_size=16, step_fn=step, val_data=val, ema=decay,
                  out_dir=tmp_path, progress=False)
    after = before[1:] + [[p.detach().double() for p in model.parameters()]]
    ref = after[0]
    for weights in after[1:]:
        ref = [decay * e + (1 - decay) * w for e, w in zip(ref, weights)]
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    ema_params = [v for k, v in ckpt["ema"].items() if k.startswith("module.")
                  and k[len("module."):] in dict(model.named_parameters())]
    assert len(ema_params) == len(ref)
    for e, r in zip(ema_params, ref):
        torch.testing.assert_close(e.double(), r, rtol=1e-5, atol=1e-6)
    averaged = tiny_net(seed=2)
    averaged.load_state_dict({k[len("module."):]: v for k, v in ckpt["ema"].items()
                              if k.startswith("module.")})
    assert history[-1]["val_ema_accuracy"] == pytest.approx(evaluate(averaged, val)["accuracy"])
    assert history[-1]["val_ema_accuracy"] != history[-1]["val_accuracy"] or \
        history[-1]["val_ema_loss"] != history[-1]["val_loss"]


def test_ema_resumes_exactly_and_is_checked(tmp_path):
    def run(out, stop_at=None, resume=False):
        model = tiny_net()

        def interrupt(epoch, m):
            if epoch == stop_at:
                raise _Interrupt

        fit(model, tiny_digits(48), torch.optim.SGD(model.parameters(), lr=0.1), epochs=3,
            batch_size=16, ema=0.9, out_dir=out, resume=resume, on_epoch_start=[interrupt],
            progress=False)
        return load_checkpoint(out / CHECKPOINT)["ema"]

    full = run(tmp_path / "a")
    with pytest.raises(_Interrupt):
        run(tmp_path / "b", stop_at=2)
    resumed = run(tmp_path / "b", resume=True)
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    model = tiny_net()
    for bad in (0, 1, 1.5, -0.1, True, "0.9", float("nan")):
        with pytest.raises(ValueError, match="ema"):
            fit(model, tiny_digits(8), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
                batch_size=8, ema=bad, progress=False)
