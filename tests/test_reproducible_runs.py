"""Same command, same seed, same machine: the same run, bit for bit, across processes
(docs/reproducibility.md). Each test runs the `ptcore` command twice in fresh processes on a
small PNG ImageFolder (train/, val/, test/) and compares every tensor of model.pt and every
record of metrics.jsonl but its wall-clock fields. The second run loads with 2 workers where
the first loads in-process: the batches and their augmentations do not depend on it.

Before the commands seeded their generators, each run drew its new head's initial weights
from a generator seeded by the clock, and every comparison here failed."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.data.formats import write_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("ant", "bee", "cat", "dog")
WALL_CLOCK = ("seconds", "samples_per_s")
COMMON = ["--image-size", "16", "--epochs", "2", "--batch-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """4 classes of noisy PNG/JPEG images, 6 per class and split (so crops and flips
    change them)."""
    root = tmp_path_factory.mktemp("imgs")
    write_image_folder(root, classes=CLASSES, per_class=6, size=20, noise=True)
    return root


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A ResNet-18 state_dict with a 4-class head, for distillation."""
    import torchvision

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(torchvision.models.resnet18(num_classes=len(CLASSES)).state_dict(), path)
    return path


def _ptcore(*argv, workers: int):
    env = {**os.environ, "PYTHONHASHSEED": str(workers)}  # the hash seed differs too
    r = subprocess.run([sys.executable, "-m", "ptcore", *argv, "--num-workers", str(workers)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _metrics(out) -> dict:
    """Every metrics.jsonl under ``out`` (incremental writes one per task folder)."""
    logs = {}
    for path in sorted(out.rglob("metrics.jsonl")):
        with open(path) as f:
            logs[str(path.relative_to(out))] = [
                {k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in f]
    return logs


def _tensors(value, prefix=""):
    if torch.is_tensor(value):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{prefix}/{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{prefix}/{i}")


def assert_same_run(a, b):
    logs = _metrics(a)
    assert logs and all(logs.values()) and logs == _metrics(b)
    ta = dict(_tensors(torch.load(a / "model.pt", weights_only=True)))
    tb = dict(_tensors(torch.load(b / "model.pt", weights_only=True)))
    assert ta and ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, different[:5]


def _twice(tmp_path, *argv):
    for name, workers in (("a", 0), ("b", 2)):
        _ptcore(*argv, "--out", str(tmp_path / name), workers=workers)
    assert_same_run(tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize("options", [["--augment", "none"], ["--augment", "basic"],
                                     ["--mixup", "0.4", "--cutmix", "1.0"]])
def test_finetune_on_image_files(tmp_path, images, options):
    # --freeze with --augment none trains from cached layer2 features
    _twice(tmp_path, "finetune", "--model", "resnet18", "--data", str(images),
           "--tune", "partial", "--freeze", "layer2", *options, *COMMON)


@pytest.mark.parametrize("augment", ["none", "trivial"])
def test_incremental_on_image_files(tmp_path, images, augment):
    _twice(tmp_path, "incremental", "--data", str(images), "--tasks", "2",
           "--method", "lwf+replay", "--memory", "8", "--augment", augment, *COMMON)


@pytest.mark.parametrize("augment", ["none", "basic"])
def test_distill_online_on_image_files(tmp_path, images, teacher, augment):
    _twice(tmp_path, "distill", "--teacher", "resnet18", "--teacher-weights", str(teacher),
           "--student", "resnet18", "--data", str(images / "train"), "--val", "0.2",
           "--test", "0.2",
           "--mode", "online", "--shots", "2", "--augment", augment, *COMMON)


def test_distill_from_a_teacher_cache_built_by_an_earlier_run(tmp_path, images, teacher):
    """Run b reads the teacher cache that run a built and left in the shared --cache-dir."""
    cache = tmp_path / "cache"
    _twice(tmp_path, "distill", "--teacher", "resnet18", "--teacher-weights", str(teacher),
           "--student", "resnet18", "--data", str(images / "train"), "--val", "0.2",
           "--test", "0.2",
           "--mode", "offline", "--topk", "2", "--cache-dir", str(cache), *COMMON)
    assert any(cache.iterdir())


def _timeless(value):
    """``value`` (parsed JSON) without its wall-clock entries."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def test_run_a_config_on_image_files(tmp_path, images):
    import yaml

    results = []
    for name, workers in (("a", 0), ("b", 2)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({
            "stage": "finetune", "seed": 3, "out": str(tmp_path / name),
            "model": {"name": "resnet18", "weights": None},
            "data": {"dataset": str(images), "image_size": 16, "augment": "basic"},
            "engine": {"epochs": 2, "batch_size": 4, "num_workers": workers},
            "methods": {"full": {"mode": "full"}}}))
        r = subprocess.run([sys.executable, "-m", "ptcore", "run", str(config),
                            "--no-progress"], capture_output=True, text=True, cwd=ROOT,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        with open(tmp_path / name / "results.json") as f:
            results.append(_timeless(json.load(f)["finetune"]))  # the stage's methods
    record = results[0]["full"]
    assert len(record["history"]) == 2 and 0 <= record["accuracy"] <= 1
    assert results[0] == results[1]
