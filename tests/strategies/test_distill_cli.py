"""`ptcore distill` and torchvision teacher/student pairs: the issue's VGG-19 → ResNet-50 at
a tiny input, and the command end to end (offline top-k, files, errors)."""
import json

import torch

from ptcore.cli import main
from ptcore.data import digits_dataset
from ptcore.models import create_model
from ptcore.strategies import Distill

from test_distill import one_thread  # noqa: F401  (autouse: the same thread setting)
from tests.helpers import stage_config


def test_vgg19_to_resnet50_smoke():
    """Random weights at 32×32, 8 samples (4 labelled, 4 unlabelled), one step, offline top-5:
    the pair runs, the student moves, the teacher does not."""
    torch.manual_seed(0)
    teacher = create_model("vgg19", num_classes=10)
    student = create_model("resnet50", num_classes=10)
    data = torch.utils.data.Subset(digits_dataset(32), range(8))
    labelled = torch.utils.data.Subset(data, range(4))
    unlabelled = torch.utils.data.Subset(data, range(4, 8))
    t_before = [p.clone() for p in teacher.parameters()]
    s_before = [p.clone() for p in student.parameters()]
    summary = Distill(teacher, student, mode="offline", topk=5, epochs=1, batch_size=8,
                      progress=False).fit(labelled, unlabelled)
    assert len(summary["history"]) == 1 and summary["teacher_samples"] == 8
    assert torch.isfinite(torch.tensor(summary["final"]["train_loss"]))
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), t_before))
    assert any(not torch.equal(a, b) for a, b in zip(student.parameters(), s_before))


def _teacher_file(tmp_path, classes=10):
    torch.manual_seed(0)
    path = tmp_path / "teacher.pt"
    torch.save(create_model("resnet18", num_classes=classes).state_dict(), path)
    return str(path)


def test_cli_offline_topk(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["distill", "--teacher", "resnet18", "--teacher-weights", _teacher_file(tmp_path),
            "--student", "mobilenet_v3_small", "--data", "digits", "--image-size", "16",
            "--teacher-image-size", "24", "--shots", "5", "--mode", "offline",
            "--topk", "5", "--epochs", "1", "--batch-size", "128", "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "offline" and summary["topk"] == 5
    assert summary["labelled"] == 50 and summary["unlabelled"] > 1000
    assert summary["teacher_samples"] == summary["labelled"] + summary["unlabelled"]
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0 and summary["test"]["count"] > 200
    for name in ("model.pt", "last.pt", "metrics.jsonl", "teacher_cache/top5/meta.json"):
        assert (out / name).is_file(), name


def test_cli_rejects_a_teacher_for_other_classes(tmp_path, capsys):
    args = ["distill", "--teacher", "resnet18", "--teacher-weights",
            _teacher_file(tmp_path, classes=7), "--student", "resnet18",
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 2
    assert "head of 7 classes; the data has 10" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_from_a_config(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = stage_config(tmp_path, "distill", out, model={"name": "mobilenet_v3_small"},
                       teacher={"name": "resnet18", "weights": _teacher_file(tmp_path, 3)},
                       data={"image_size": 16, "classes": [0, 1, 2], "shots": 3},
                       engine={"epochs": 1, "batch_size": 128, "precise_bn": 2},
                       strategy={"mode": "offline", "topk": 2, "temperature": 2.0})
    assert main(["distill", "--config", cfg, "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "offline" and summary["topk"] == 2
    assert summary["temperature"] == 2.0 and summary["labelled"] == 9


def test_cli_names_what_is_missing(tmp_path, capsys):
    assert main(["distill", "--student", "resnet18", "--out", str(tmp_path / "run")]) == 2
    assert "needs --teacher, --teacher-weights" in capsys.readouterr().err


def test_cli_dkd(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["distill", "--teacher", "resnet18", "--teacher-weights", _teacher_file(tmp_path, 2),
            "--student", "mobilenet_v3_small", "--data", "digits", "--image-size", "16",
            "--classes", "0,1", "--shots", "3", "--method", "dkd", "--epochs", "1",
            "--batch-size", "128", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "dkd" and summary["divergence"] == "forward_kl"
    assert main(args[:-3] + ["--divergence", "jsd", "--out", str(tmp_path / "bad")]) == 2
    assert "divergence='jsd' needs full logits and method 'kd'" in capsys.readouterr().err


def test_cli_feature_kd_from_a_config(tmp_path):
    out = tmp_path / "run"
    cfg = stage_config(tmp_path, "distill", out, model={"name": "mobilenet_v3_small"},
                       teacher={"name": "resnet18", "weights": _teacher_file(tmp_path, 2)},
                       data={"image_size": 16, "classes": [0, 1], "shots": 3},
                       engine={"epochs": 1, "batch_size": 128},
                       strategy={"method": "fitnets", "features": [["features.1", "layer1"]],
                                 "divergence": "jsd", "feature_weight": 0.5})
    assert main(["distill", "--config", cfg, "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "fitnets" and summary["features"] == [["features.1", "layer1"]]
    assert summary["divergence"] == "jsd" and "train_feature" in summary["final"]
