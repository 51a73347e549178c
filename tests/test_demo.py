"""The demo end to end at a reduced size, `ptcore run` on the examples, and the CLI."""
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from ptcore.cli import main
from ptcore.config import load_config, validate_config
from ptcore.demo import preset_configs
from ptcore.demo.demo import run_demo
from ptcore.demo.presets import PRESETS
from ptcore.report import read_results

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
METHODS = {"finetune": {"scratch", "linear_probe", "partial", "full"},
           "incremental": {"naive", "lwf", "replay", "ewc"},
           "distill": {"hard_labels", "kd_online", "kd_offline"}}


@pytest.fixture(scope="module")
def tiny_quick(tmp_path_factory, monkeypatch_module):
    """The quick preset shrunk: 8×8 inputs (the digits' own size), one epoch, few samples."""
    # Half the data for validation: training sees ~20% of it (distillation's pool too).
    shrink = {"image_size": 8, "test": 0.3, "val": 0.5}
    shots = {"pretrain": 30, "finetune": 4, "incremental": 8, "distill": 3}
    real = preset_configs

    def small(preset, out, *, seed=0, scale=1.0):
        cfgs = real(preset, out, seed=seed, scale=scale)
        for c in cfgs:
            c["data"].update(shrink, shots=shots[c["stage"]])
            c["engine"].update(progress=False)
            for m in c.get("methods", {}).values():
                m.pop("epochs", None)
        cfgs[0]["engine"]["epochs"] = 3  # enough for the backbone to learn something
        return cfgs

    monkeypatch_module.setattr("ptcore.demo.demo.preset_configs", small)
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, preset="quick", seed=3, scale=0.01)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_results_schema_and_ranges(tiny_quick):
    out, returned = tiny_quick
    results = read_results(out / "results.json")  # validates the schema
    assert results["seed"] == 3 and results["environment"]["ptcore"]
    assert results["command"].startswith("ptcore demo")
    for stage, names in METHODS.items():
        assert set(results[stage]) == names
        for rec in results[stage].values():
            assert rec["train_seconds"] > 0
            for key in ("accuracy", "average_incremental_accuracy", "final_accuracy"):
                if key in rec:
                    assert 0.0 <= rec[key] <= 1.0
    for rec in results["incremental"].values():
        matrix = rec["accuracy_matrix"]
        assert len(matrix) == 3 and all(len(r) == 3 for r in matrix)
        assert matrix[0][1] is None and all(0 <= v <= 1 for v in matrix[2])
        # The pretrained head holds the source classes: task 0 is not retrained.
        assert math.isclose(rec["average_incremental_accuracy"],
                            sum(rec["accuracy_after_task"]) / 3)
    assert results["finetune"]["linear_probe"]["uncached_epoch_seconds"] > 0
    assert results["finetune"]["linear_probe"]["trainable_params"] < \
        results["finetune"]["partial"]["trainable_params"] < \
        results["finetune"]["full"]["trainable_params"]
    assert results["distill"]["hard_labels"]["unlabelled"] == 0
    assert results["distill"]["kd_offline"]["unlabelled"] > 0
    assert 0 <= results["context"]["distill"]["teacher_accuracy"] <= 1
    assert returned["wall_seconds"] == results["wall_seconds"]


def test_pretrained_source_task_beats_chance(tiny_quick):
    """Real learning, even at this size: the pretrained model knows the 5 source classes
    (chance is 20%) before any new task arrives."""
    results = read_results(tiny_quick[0] / "results.json")
    assert results["pretrain"]["resnet18"]["accuracy"] > 0.4
    assert results["incremental"]["naive"]["accuracy_matrix"][0][0] > 0.4


def test_report_and_plots_written(tiny_quick):
    out, results = tiny_quick
    report = (out / "report.md").read_text()
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert "incremental_heatmap_replay.png" in report and "comparison.png" in report
    assert "finetune_learning_curves.png" in report
    acc = results["finetune"]["partial"]["accuracy"]
    assert f"| partial | {100 * acc:.1f}% |" in report


def test_stage_configs_written_and_rerunnable(tiny_quick):
    out, results = tiny_quick
    for stage in ("pretrain", "finetune", "incremental", "distill"):
        written = yaml.safe_load((out / "configs" / f"{stage}.yaml").read_text())
        assert validate_config(written) == results["configs"][stage]


def test_ptcore_run_on_an_example_config(tmp_path, monkeypatch, capsys):
    """examples/pretrain.yaml through the CLI, shrunk by editing a copy of it."""
    doc = yaml.safe_load((EXAMPLES / "pretrain.yaml").read_text())
    doc["out"] = str(tmp_path / "pretrain")
    doc["data"].update(image_size=8, shots=5)
    doc["engine"].update(epochs=1, progress=False)
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["run", str(path), "--out", str(tmp_path / "report")]) == 0
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert set(results["pretrain"]) == {"resnet18"}
    assert (tmp_path / "pretrain" / "resnet18" / "model.pt").is_file()
    assert "pretrain/resnet18" in capsys.readouterr().out


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["engine"].update(epochs=0), r"engine\.epochs must be a positive int"),
    (lambda d: d["methods"]["partial"].update(freeze="layer9"), "unknown split point 'layer9'"),
    (lambda d: d["data"].update(classes=[5, 42]), r"classes \[42\] have no samples"),
    (lambda d: d["model"].update(weights=str(d["out"]) + "/nothing.pt"), "does not exist"),
])
def test_ptcore_run_rejects_before_training(tmp_path, capsys, edit, message):
    doc = yaml.safe_load((EXAMPLES / "finetune.yaml").read_text())
    doc["out"] = str(tmp_path / "ft")
    doc["model"]["weights"] = None
    edit(doc)
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in doc.items()}))
    assert main(["run", str(path)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "ft").exists()  # nothing trained, nothing written


def test_examples_are_the_quick_preset():
    """examples/ documents exactly what `ptcore demo` runs."""
    expected = {c["stage"]: validate_config(c) for c in preset_configs("quick", "runs/demo")}
    for stage, ext in (("pretrain", "yaml"), ("finetune", "yaml"), ("incremental", "toml"),
                       ("distill", "yaml")):
        assert load_config(EXAMPLES / f"{stage}.{ext}") == expected[stage]


def test_every_preset_validates():
    for preset in PRESETS:
        for cfg in preset_configs(preset, "runs/x"):
            validate_config(cfg)
