"""The user's path of issue 13, end to end through `ptcore finetune --config`: fine-tune a
pretrained torchvision or timm model on an ImageFolder (train/, val/, test/) with its
weights' preprocessing, TensorBoard logging and best-checkpointing, all from one YAML file.

No network: the named weights are planted where each library looks first (the torch hub
cache for torchvision, the Hugging Face cache for timm), holding a randomly initialised
model of the right architecture; ptcore reads them as it would the real ones.

Split CIFAR-100 by name (`ptcore incremental --benchmark split-cifar100 --tasks 10`) is the
other half of that path; it runs on the CIFAR-100 pickle fixture in
tests/data/test_official.py::test_split_cifar100_from_the_command_line (and through
`ptcore run` in tests/data/test_data_config.py::test_run_reads_a_benchmark).
"""
import json

import pytest
import torch
import yaml

from ptcore.cli import main
from ptcore.engine.checkpoint import load_checkpoint
from ptcore.engine.metrics import read_metrics
from ptcore.models import read_state_dict
from tests.data.formats import write_image_folder
from tests.helpers import plant_torchvision_weights

pytest.importorskip("tensorboard")


@pytest.fixture
def used_preprocessing(monkeypatch):
    """Every Preprocessing the run builds an evaluation transform from (the images it
    reads go through these)."""
    import ptcore.models.preprocess as P

    seen, real = [], P.eval_transform

    def spy(p):
        seen.append(p)
        return real(p)

    monkeypatch.setattr(P, "eval_transform", spy)
    return seen


def _hf_hub(tmp_path, monkeypatch):
    """timm resnet50d's DEFAULT weights in a Hugging Face cache of its own, laid out as
    huggingface_hub writes it, with the hub offline (it then reads the cache only)."""
    import huggingface_hub.constants as hf
    import safetensors.torch
    import timm

    cfg = timm.models.get_pretrained_cfg("resnet50d")
    cache = tmp_path / "hf"
    repo = cache / ("models--" + cfg.hf_hub_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    torch.manual_seed(0)
    state = timm.create_model("resnet50d", pretrained=False).state_dict()
    safetensors.torch.save_file(state, repo / "snapshots" / commit / "model.safetensors")
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    return state, cfg


def _finetune(tmp_path, model: str) -> tuple:
    """Run the one config; returns (out folder, summary.json)."""
    data = tmp_path / "pets"
    write_image_folder(data, per_class=4)
    out = tmp_path / "run"
    config = tmp_path / "finetune.yaml"
    config.write_text(yaml.safe_dump({
        "stage": "finetune", "out": str(out),
        "model": {"name": model, "weights": "DEFAULT"},
        # only the size overridden (tiny images, for speed): the rest stays the weights'
        "data": {"dataset": str(data), "preprocess": {"crop_size": 32, "resize_size": 36}},
        "engine": {"epochs": 2, "batch_size": 1, "log": ["jsonl", "tensorboard"],
                   "log_every": 1, "keep_best": 1, "best_metric": "val_accuracy",
                   "best_mode": "max"},
        "strategy": {"mode": "linear", "lr": 0.05}}))
    assert main(["finetune", "--config", str(config), "--no-progress"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def _check_run(out, summary, planted):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    epochs = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in epochs] == [0, 1]
    # TensorBoard holds every epoch's scalars, as metrics.jsonl has them
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for key in ("train_loss", "val_loss", "val_accuracy"):
        logged = [e.value for e in events.Scalars(f"epoch/{key}")]
        assert logged == pytest.approx([r[key] for r in epochs], rel=1e-6), key
    assert len(events.Scalars("step/loss")) == 16  # 8 images, one a step, 2 epochs
    # the config's lr is the head's peak (the deeper, frozen layers get less: layer decay)
    assert max(e.value for e in events.Scalars("step/lr")) == pytest.approx(0.05, rel=0.05)
    # one best checkpoint kept: the epoch with the highest val_accuracy (the earlier on a tie)
    best = max(range(2), key=lambda i: (epochs[i]["val_accuracy"], -i))
    kept = sorted(p.name for p in out.glob("best-epoch-*.pt"))
    assert kept == [f"best-epoch-{best + 1:04d}.pt"]
    assert json.loads((out / "best.json").read_text())[0]["epoch"] == best + 1
    assert load_checkpoint(out / kept[0])["epoch"] == best + 1
    # the test split (test/: 2 classes x 4 images) is evaluated and reported; the images
    # are one colour per class, so a linear probe on any features separates them
    assert summary["test"]["count"] == 8
    assert summary["test"]["accuracy"] >= 0.75
    # the planted weights were loaded: a linear probe leaves all but the head as they were
    tuned = read_state_dict(out / "model.pt")
    backbone = [k for k in planted if planted[k].shape == tuned[k].shape]
    assert len(backbone) == len(planted) - 2  # the head's weight and bias: 2 classes now
    assert all(torch.equal(planted[k], tuned[k]) for k in backbone)


def _check_size_only_overridden(seen, source, weights_p, summary):
    """The run read its images at 32 px with the weights' interpolation, mean and std, and
    says so in summary.json (what model.pt expects as input)."""
    assert seen
    for p in seen:
        assert (p.crop_size, p.resize_size) == (32, 36)
        assert p.source == f"{source} (overridden)"
        assert (p.interpolation, p.mean, p.std) == weights_p
    recorded = summary["preprocessing"]
    assert (recorded["crop_size"], recorded["resize_size"]) == (32, 36)
    assert recorded["source"] == f"{source} (overridden)"
    assert (recorded["interpolation"], tuple(recorded["mean"]), tuple(recorded["std"])) == \
        tuple(weights_p)


def test_convnext_tiny_with_its_torchvision_weights(tmp_path, monkeypatch, used_preprocessing,
                                                    capsys):
    planted, native = plant_torchvision_weights(tmp_path, monkeypatch, "convnext_tiny")
    out, summary = _finetune(tmp_path, "convnext_tiny")
    _check_run(out, summary, planted)
    _check_size_only_overridden(used_preprocessing, "torchvision convnext_tiny.DEFAULT", (
        native.interpolation.value, tuple(native.mean), tuple(native.std)), summary)
    assert "test accuracy" in capsys.readouterr().out


def test_timm_resnet50d_with_its_pretrained_weights(tmp_path, monkeypatch,
                                                    used_preprocessing, capsys):
    pytest.importorskip("timm")
    pytest.importorskip("safetensors")
    planted, cfg = _hf_hub(tmp_path, monkeypatch)
    out, summary = _finetune(tmp_path, "timm/resnet50d")
    _check_run(out, summary, planted)
    # bicubic: not the ImageNet default ptcore falls back to, so the weights' config was read
    assert cfg.interpolation == "bicubic"
    _check_size_only_overridden(used_preprocessing, "timm resnet50d",
                                (cfg.interpolation, cfg.mean, cfg.std), summary)
    assert "test accuracy" in capsys.readouterr().out
