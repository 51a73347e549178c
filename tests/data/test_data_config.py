"""The data keys of a config that choose official splits and preprocessing, read by the
subcommands' --config and by `ptcore run`."""
import json

import pytest
import yaml

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
    with pytest.raises(ConfigError, match="task count with data.benchmark"):
        validate_config(_cfg("incremental", benchmark="split-cifar100", tasks=[[0, 1]]))
    full = validate_config(_cfg("incremental", benchmark="split-cifar100",
                                preprocess={"interpolation": "bicubic"}))
    assert full["data"]["preprocess"] == {"interpolation": "bicubic"}


def test_incremental_config_reaches_the_options(tmp_path):
    from ptcore.cli import build_parser
    from ptcore.config import merge_config

    path = tmp_path / "c.yaml"
    path.write_text("data:\n  benchmark: split-cifar100\n  tasks: 10\n  root: /data\n"
                    "  preprocess: {interpolation: bicubic}\nout: runs/x\n")
    args = build_parser().parse_args(["incremental", "--config", str(path)])
    merge_config(args, "incremental", required=("out",),
                 aliases={"strategy.classes": "head_classes"})
    assert (args.benchmark, args.tasks, args.root) == ("split-cifar100", 10, "/data")
    assert args.preprocess == {"interpolation": "bicubic"}


def test_run_reads_a_benchmark(cifar100, tmp_path):
    from ptcore.cli import main
    from ptcore.data import class_order

    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump({
        "stage": "incremental", "out": str(tmp_path / "run"),
        "model": {"name": "mobilenet_v3_small"},
        "data": {"benchmark": "split-cifar100", "root": str(cifar100), "tasks": 2,
                 "preprocess": {"image_size": 32}},
        "engine": {"epochs": 1, "batch_size": 50}, "methods": {"naive": {"method": "naive"}}}))
    assert main(["run", str(path), "--no-progress"]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    order = class_order(100)  # PyCIL's (its values: tests/data/test_official.py)
    tasks = [",".join(map(str, sorted(order[:50]))), ",".join(map(str, sorted(order[50:])))]
    assert results["incremental"]["naive"]["task_names"] == tasks
    # all of the official train split (no validation carved out), and its test split: one
    # image per class, so every accuracy is a multiple of 1/50
    assert results["context"]["incremental"]["train_samples"] == 200
    matrix = results["incremental"]["naive"]["accuracy_matrix"]
    assert all(abs(50 * v - round(50 * v)) < 1e-6 for row in matrix for v in row if v is not None)


def test_run_reads_folder_splits_with_the_preprocessing(tmp_path):
    from torchvision.transforms import InterpolationMode, Resize

    from ptcore.runner.stages import prepare
    from tests.data.formats import write_image_folder

    write_image_folder(tmp_path / "pets", per_class=3)
    cfg = validate_config({"stage": "finetune", "out": str(tmp_path / "o"),
                           "model": {"name": "resnet18"}, "strategy": {"mode": "full"},
                           "data": {"dataset": str(tmp_path / "pets"), "image_size": 32,
                                    "preprocess": {"crop_size": 24,
                                                   "interpolation": "bicubic"}}})
    data = prepare(cfg).data
    # the folder's own val/ and test/, not fractions carved out of train/
    assert (len(data["train"]), len(data["val"]), len(data["test"])) == (6, 6, 6)
    x, _ = data["test"][0]
    assert x.shape == (3, 24, 24)  # crop_size wins over data.image_size
    resize = [t for t in data["test"].transform.transforms if isinstance(t, Resize)]
    assert resize[0].interpolation == InterpolationMode.BICUBIC


def test_run_augments_the_training_split_only(tmp_path):
    """`ptcore run` reads data.augment: the training samples come through a random view at
    the weights' preprocessing, validation and test through the evaluation transform, and
    a test split carved out of the non-shots (finetune with data.test 0) is not augmented."""
    import torch

    from ptcore.runner.stages import prepare
    from tests.data.formats import write_image_folder

    write_image_folder(tmp_path / "pets", per_class=3, noise=True)
    cfg = validate_config({"stage": "finetune", "out": str(tmp_path / "o"),
                           "model": {"name": "resnet18"}, "strategy": {"mode": "full"},
                           "data": {"dataset": str(tmp_path / "pets"), "image_size": 24,
                                    "augment": "basic"}})
    data = prepare(cfg).data
    assert data["train"].deterministic is False
    torch.manual_seed(0)
    draws = [data["train"][0][0] for _ in range(4)]
    assert all(x.shape == (3, 24, 24) for x in draws)
    assert any(not torch.equal(draws[0], x) for x in draws[1:])  # random crops and flips
    for split in ("val", "test"):
        assert torch.equal(data[split][0][0], data[split][0][0])

    digits = validate_config({"stage": "finetune", "out": str(tmp_path / "d"),
                              "model": {"name": "resnet18"}, "strategy": {"mode": "full"},
                              "data": {"dataset": "digits", "image_size": 16, "shots": 2,
                                       "test": 0.0, "augment": "basic"}})
    data = prepare(digits).data
    assert data["train"].deterministic is False and len(data["train"]) == 20
    assert getattr(data["test"], "deterministic", True) is not False  # the non-shots
    assert torch.equal(data["test"][0][0], data["test"][0][0])
