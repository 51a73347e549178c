"""Optimizer choice: SGD with (Nesterov) momentum follows the update written out by hand;
strategies build the chosen optimizer over their parameter groups; bad choices fail early."""
import pytest
import torch
import yaml

import ptcore.commands.finetune as finetune_cmd
from ptcore.cli import main
from ptcore.commands._engine_args import strategy_kwargs
from ptcore.engine import make_optimizer
from ptcore.models import create_model
from ptcore.strategies import Distill, FineTune, Incremental


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_against_the_update_by_hand(nesterov):
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer([w], "sgd", momentum=0.8, nesterov=nesterov, lr=0.1)
    ref, buf = torch.zeros(3, dtype=torch.float64), None
    for _ in range(4):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()
        g = 2 * (ref - target)  # the gradient of the same loss at the reference point
        buf = g if buf is None else 0.8 * buf + g
        ref = ref - 0.1 * (g + 0.8 * buf if nesterov else buf)
    torch.testing.assert_close(w.detach(), ref, rtol=1e-12, atol=1e-12)


def test_strategies_build_the_chosen_optimizer(tmp_path, monkeypatch):
    model = create_model("resnet18", num_classes=4)
    ft = FineTune(model, mode="full", optimizer="sgd", momentum=0.7, nesterov=True, lr=0.01)
    assert isinstance(ft.optimizer, torch.optim.SGD)
    assert all(g["momentum"] == 0.7 and g["nesterov"] for g in ft.optimizer.param_groups)
    assert len(ft.optimizer.param_groups) > 1  # the layer-wise groups are kept
    assert isinstance(FineTune(model, mode="full").optimizer, torch.optim.AdamW)
    d = Distill(create_model("resnet18", num_classes=4), model, optimizer="sgd", momentum=0.5)
    assert isinstance(d.optimizer, torch.optim.SGD)
    assert Incremental(model, optimizer="sgd").optim["optimizer"] == "sgd"
    for kw, msg in [({"optimizer": "adam"}, "optimizer must be"),
                    ({"optimizer": "sgd", "momentum": 1.0}, "momentum"),
                    ({"nesterov": True}, "nesterov")]:
        with pytest.raises(ValueError, match=msg):
            FineTune(model, mode="full", **kw)
        with pytest.raises(ValueError, match=msg):
            Incremental(model, **kw)
    seen = {}
    monkeypatch.setattr(finetune_cmd, "_finetune",
                        lambda args: seen.update(strategy_kwargs(args)) or {"test": {}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"stage": "finetune", "out": str(tmp_path / "o"),
                                    "engine": {"optimizer": "sgd", "momentum": 0.5}}))
    assert main(["finetune", "--config", str(path), "--model", "resnet18", "--nesterov"]) == 0
    assert (seen["optimizer"], seen["momentum"], seen["nesterov"]) == ("sgd", 0.5, True)


def test_label_smoothing_changes_the_training_loss_as_written_by_hand():
    from ptcore.data import digits_dataset, train_val_test_split

    data = train_val_test_split(digits_dataset(16), 0.0, 0.95, seed=0)[0]  # ~90 images
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([data[i][1] for i in range(len(data))])
    losses = {}
    for eps in (0.0, 0.2):
        torch.manual_seed(0)
        model = create_model("resnet18", num_classes=10)
        logp = torch.log_softmax(model.train()(x).double(), -1).detach()
        # (1 - eps)·NLL of the label + eps·mean over classes of -log p: the smoothed target
        ref = ((1 - eps) * -logp[torch.arange(len(y)), y] - eps * logp.mean(-1)).mean()
        # One full batch at a vanishing rate: the epoch's train_loss is the loss at the start.
        ft = FineTune(model, mode="full", epochs=1, batch_size=len(data), lr=1e-12,
                      label_smoothing=eps, optimizer="sgd", momentum=0.0, progress=False,
                      device="cpu")
        losses[eps] = ft.fit(data)["history"][0]["train_loss"]
        assert losses[eps] == pytest.approx(float(ref), rel=1e-4)
    assert losses[0.2] != pytest.approx(losses[0.0], rel=1e-3)
    for bad in (-0.1, 1.0, True, "0.1"):
        with pytest.raises(ValueError, match="label_smoothing"):
            Incremental(create_model("resnet18", num_classes=4), label_smoothing=bad)
