"""Logging and checkpoint options from a config or the command line reach fit() through a
strategy, and a strategy refuses bad ones before any training."""
import pytest
import yaml

import ptcore.commands.finetune as finetune_cmd
from ptcore.cli import main
from ptcore.commands._engine_args import strategy_kwargs
from ptcore.models import create_model
from ptcore.strategies import Distill, FineTune, Incremental


def test_config_and_argv_give_the_run_options(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(finetune_cmd, "_finetune",
                        lambda args: seen.update(strategy_kwargs(args)) or {"test": {}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"stage": "finetune", "out": str(tmp_path / "o"), "engine": {
        "log": ["csv", "tensorboard"], "keep_best": 2, "best_metric": "val_accuracy",
        "best_mode": "max", "patience": 4, "save_every": 100}}))
    assert main(["finetune", "--config", str(path), "--model", "resnet18",
                 "--keep-last", "3", "--patience", "5"]) == 0
    assert seen["save_every"] == 100
    assert seen["log"] == "csv,tensorboard" and seen["keep_best"] == 2
    assert seen["best_metric"] == "val_accuracy" and seen["best_mode"] == "max"
    assert seen["keep_last"] == 3 and seen["patience"] == 5  # the command line wins


def test_strategies_hand_the_run_options_to_fit():
    # What fit() does with them is tested in test_loggers.py and test_policy.py.
    options = {"log": "csv", "log_every": 1, "keep_best": 1, "best_metric": "val_accuracy",
               "best_mode": "max", "keep_last": 2, "patience": 3, "save_every": 7}
    model = create_model("resnet18", num_classes=4)
    for strategy in (FineTune(model, mode="full", **options),
                     Incremental(model, **{**options, "best_metric": "train_loss"}),
                     Distill(create_model("resnet18", num_classes=4), model, **options)):
        assert options.items() - {("best_metric", "val_accuracy")} <= strategy.fit_args.items()


def test_strategies_refuse_bad_run_options_at_construction():
    model = create_model("resnet18", num_classes=4)
    with pytest.raises(TypeError, match="unexpected keyword"):
        FineTune(model, mode="full", keep_bets=2)
    with pytest.raises(ValueError, match="best_mode"):
        FineTune(model, mode="full", keep_best=1, best_mode="highest")
    with pytest.raises(ValueError, match="unknown logger"):
        FineTune(model, mode="full", log=["mlflow"])
    # Incremental validates nothing per epoch: a val_ metric cannot rank its checkpoints.
    with pytest.raises(ValueError, match="needs validation data"):
        Incremental(model, keep_best=1)
    Incremental(model, keep_best=1, best_metric="train_loss")
