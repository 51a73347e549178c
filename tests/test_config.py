"""Stage configs: YAML and TOML loading, errors before training, `--config` merging."""
import argparse

import pytest

from ptcore.config import (ConfigError, add_config_argument, load_config, merge_config,
                           validate_config)

BASE = {"stage": "finetune", "out": "runs/x", "model": {"name": "resnet18"}}


def _with(**changes):
    cfg = {**BASE, **changes}
    return {k: v for k, v in cfg.items() if v is not None}


def test_defaults_are_filled_in():
    cfg = validate_config(BASE)
    assert cfg["seed"] == 0
    assert cfg["data"]["dataset"] == "digits" and cfg["data"]["val"] == 0.15
    assert cfg["model"]["weights"] is None
    assert cfg["methods"] == {"finetune": {}}


def test_yaml_and_toml_give_the_same_config(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "stage: finetune\nout: runs/x\nmodel: {name: resnet18}\n"
        "data: {classes: [5, 6], shots: 3}\nengine: {epochs: 2}\n"
        "methods:\n  partial: {mode: partial, freeze: layer2}\n")
    (tmp_path / "a.toml").write_text(
        'stage = "finetune"\nout = "runs/x"\n[model]\nname = "resnet18"\n'
        "[data]\nclasses = [5, 6]\nshots = 3\n[engine]\nepochs = 2\n"
        '[methods.partial]\nmode = "partial"\nfreeze = "layer2"\n')
    assert load_config(tmp_path / "a.yaml") == load_config(tmp_path / "a.toml")


@pytest.mark.parametrize("cfg, message", [
    (_with(stage="finetuning"), "stage must be one of"),
    (_with(out=None), "out"),
    (_with(modle={"name": "resnet18"}), r"unknown key\(s\) \['modle'\]"),
    (_with(model={"name": "resnet18", "wieghts": "x"}), r"model: unknown key\(s\) \['wieghts'\]"),
    (_with(model={}), r"model\.name is required"),
    (_with(data={"image_size": "32"}), r"data\.image_size: expected int or null, got str"),
    (_with(data={"val": 1.5}), r"data\.val must be a fraction"),
    (_with(data={"shots": 0}), r"data\.shots must be a positive int"),
    (_with(data={"classes": [1, "two"]}), r"data\.classes must be a list of class ids"),
    (_with(data={"tasks": 2}), "data.tasks belongs to the incremental stage"),
    (_with(engine={"epochs": "ten"}), r"engine\.epochs: expected int"),
    (_with(engine={"epochs": True}), r"engine\.epochs: expected int, got a boolean"),
    (_with(engine={"lr": 0.1}), r"engine: unknown option\(s\) \['lr'\]"),
    (_with(strategy={"epochs": 3}), r"strategy: unknown option\(s\) \['epochs'\]"),
    (_with(strategy={"temperature": 2.0}), r"unknown option\(s\) \['temperature'\]"),
    (_with(strategy={"cache_dtype": "float8"}), "cache_dtype must be one of"),
    (_with(engine={"epochs": 0}), r"engine\.epochs must be a positive int, got 0"),
    (_with(methods={"a": {"lr": -1.0}}), r"methods\.a\.lr must be > 0"),
    (_with(engine={"schedule": "linear"}), r"engine\.schedule must be one of"),
    (_with(methods={"a": {"mode": 3}}), r"methods\.a\.mode: expected str, got int"),
    (_with(methods={"a": {"unlabelled": False}}), r"methods\.a: unknown option"),
    (_with(methods={}), "non-empty mapping"),
    (_with(teacher={"name": "resnet18"}), "teacher section is required by the distill stage"),
    (_with(stage="distill"), "teacher section is required by the distill stage"),
    (_with(stage="incremental"), r"data\.tasks .* is required"),
])
def test_bad_configs_name_the_key(cfg, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(ConfigError, match="use .yaml, .yml or .toml"):
        load_config(tmp_path / "a.json")
    (tmp_path / "b.yaml").write_text("stage: [finetune\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "c.toml").write_text("stage = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "c.toml")


def _parser():
    """A subcommand shaped like `ptcore finetune`."""
    p = argparse.ArgumentParser(prog="ptcore finetune")
    p.add_argument("--model")
    p.add_argument("--weights")
    p.add_argument("--data", default="digits")
    p.add_argument("--data-root")
    p.add_argument("--classes", help="comma-separated")
    p.add_argument("--labels-per-class", type=int)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--out")
    add_config_argument(p, "finetune")
    return p


def test_merge_fills_options_the_command_line_left_at_default(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("model: {name: resnet18, weights: w.pt}\n"
                    "data: {classes: [5, 6], root: /d, shots: 4}\n"
                    "engine: {epochs: 3}\nstrategy: {lr: 0.01, cache: false}\nout: runs/f\n")
    args = _parser().parse_args(["--config", str(path), "--epochs", "7"])
    merge_config(args, "finetune", aliases={"data.shots": "labels_per_class"},
                 required=("model", "out"))
    assert (args.model, args.weights, args.data_root) == ("resnet18", "w.pt", "/d")
    assert args.classes == "5,6" and args.labels_per_class == 4
    assert args.epochs == 7  # given on the command line: it wins
    assert args.lr == 0.01 and args.no_cache is True and args.out == "runs/f"


@pytest.mark.parametrize("text, message", [
    ("stage: distill\n", "a 'distill' config given to `ptcore finetune`"),
    ("methods: {a: {}}\n", "use|run it with `ptcore run"),
    ("data: {tasks: 2}\n", "data.tasks belongs to the incremental stage"),
    ("model: {kwargs: {width_mult: 0.5}}\n", "model.kwargs has no option"),
    ("engine: {epochs: 1.5}\n", r"engine\.epochs: expected int"),
])
def test_merge_errors(tmp_path, text, message):
    path = tmp_path / "f.yaml"
    path.write_text(text)
    args = _parser().parse_args(["--config", str(path)])
    with pytest.raises(ConfigError, match=message):
        merge_config(args, "finetune")


def test_merge_keeps_strategy_keys_without_an_option_for_the_strategy(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("strategy: {layer_decay: 0.3, lr: 0.02}\nengine: {warmup: 0.2}\n"
                    "model: {kwargs: {}}\n")
    args = merge_config(_parser().parse_args(["--config", str(path)]), "finetune")
    assert args.config_options == {"layer_decay": 0.3, "warmup": 0.2}
    assert args.lr == 0.02  # it has an option: set there


def test_merge_without_config_checks_required():
    args = _parser().parse_args([])
    with pytest.raises(ConfigError, match="needs --model, --out"):
        merge_config(args, "finetune", required=("model", "out"))
