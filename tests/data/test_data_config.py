"""The data keys of a config that choose official splits and preprocessing."""
import pytest

from ptcore.config import ConfigError
from ptcore.config.schema import validate_config


def _cfg(stage, **data):
    extra = {"tasks": 10} if stage == "incremental" else {}
    return {"stage": stage, "out": "o", "model": {"name": "resnet18"}, "data": {**extra, **data}}


def test_benchmark_and_preprocess_keys():
    cfg = validate_config(_cfg("incremental", benchmark="split-cifar100",
                               preprocess={"image_size": 32}), partial=True)
    assert cfg["data"]["benchmark"] == "split-cifar100" and cfg["data"]["download"] is False
    with pytest.raises(ConfigError, match="data.benchmark belongs to the incremental stage"):
        validate_config(_cfg("finetune", benchmark="split-cifar100"), partial=True)
    with pytest.raises(ConfigError, match="must be one of split-cifar100"):
        validate_config(_cfg("incremental", benchmark="split-cifar10"), partial=True)
    with pytest.raises(ConfigError, match="unknown key"):
        validate_config(_cfg("finetune", preprocess={"crop": 3}), partial=True)
    with pytest.raises(ConfigError, match="interpolation"):
        validate_config(_cfg("finetune", preprocess={"interpolation": "box"}), partial=True)
    with pytest.raises(ConfigError, match="not yet by `ptcore run`"):
        validate_config(_cfg("incremental", benchmark="split-cifar100"))


def test_incremental_config_reaches_the_options(tmp_path):
    from ptcore.cli import build_parser
    from ptcore.config import merge_config

    path = tmp_path / "c.yaml"
    path.write_text("data:\n  benchmark: split-cifar100\n  tasks: 10\n  root: /data\n"
                    "  preprocess: {interpolation: bicubic}\nout: runs/x\n")
    args = build_parser().parse_args(["incremental", "--config", str(path)])
    merge_config(args, "incremental", required=("out",),
                 aliases={"data.test": "test_fraction", "data.classes": "data_classes"})
    assert (args.benchmark, args.tasks, args.root) == ("split-cifar100", 10, "/data")
    assert args.preprocess == {"interpolation": "bicubic"}
