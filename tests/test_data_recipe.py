"""One data recipe (ptcore.config.recipe.load_data): each strategy subcommand's data options
and the equivalent stage config give the same `data` section, and so the same splits, sample
for sample. Before, each command assembled its data on its own (`ptcore distill` never read
an ImageFolder root's train/val/test folders: it took them for three classes)."""
import pytest
import yaml

import ptcore.commands.distill as distill_cmd
import ptcore.commands.finetune as finetune_cmd
import ptcore.commands.incremental as incremental_cmd
from ptcore.cli import main
from ptcore.config import load_config
from ptcore.config.recipe import load_data
from ptcore.data import targets_of
from tests.data.formats import write_image_folder

CLASSES = ("ant", "bee", "cat")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    write_image_folder(root, classes=CLASSES, per_class=5, size=12)
    return root


def _samples(split):
    """What a split holds: (its size, its labels), or each task's for a list of tasks."""
    if isinstance(split, list):
        return [_samples(t) for t in split]
    return None if split is None else (len(split), targets_of(split).tolist())


def _cli_section(monkeypatch, module, name, argv):
    """The args the subcommand's run hands its worker (the data options among them)."""
    seen = {}
    summary = {"test": {"accuracy": 0.0, "count": 0}, "labelled": 0, "unlabelled": 0,
               "teacher_samples": 0}
    monkeypatch.setattr(module, f"_{name}", lambda args: seen.update(vars(args)) or (
        0 if name == "incremental" else summary))
    assert main([name, *argv, "--out", "unused"]) == 0
    return seen


CASES = {
    "finetune": (finetune_cmd, ["--model", "resnet18", "--image-size", "16", "--shots", "2",
                                "--classes", "0,2", "--augment", "basic"],
                 {"model": {"name": "resnet18"},
                  "data": {"image_size": 16, "shots": 2, "classes": [0, 2],
                           "augment": "basic"}}),
    "incremental": (incremental_cmd, ["--image-size", "16", "--tasks", "3", "--classes",
                                      "0,1,2", "--test", "0.3", "--augment", "trivial"],
                    {"model": {"name": "resnet18"},
                     "data": {"image_size": 16, "tasks": 3, "classes": [0, 1, 2], "test": 0.3,
                              "val": 0.0, "augment": "trivial"}}),
    "distill": (distill_cmd, ["--teacher", "resnet18", "--teacher-weights", "t.pt",
                              "--student", "resnet18", "--image-size", "16",
                              "--shots", "1", "--val", "0.2"],
                {"model": {"name": "resnet18"},
                 "teacher": {"name": "resnet18", "weights": "t.pt"},
                 "data": {"image_size": 16, "shots": 1, "val": 0.2}}),
}


@pytest.mark.parametrize("stage", sorted(CASES))
@pytest.mark.parametrize("source", ["digits", "folder"])
def test_the_command_and_its_config_give_the_same_splits(stage, source, images, tmp_path,
                                                         monkeypatch):
    module, argv, doc = CASES[stage]
    dataset = "digits" if source == "digits" else str(images)
    args = _cli_section(monkeypatch, module, stage, [*argv, "--data", dataset])
    path = tmp_path / "c.yaml"
    doc = {**doc, "data": {**doc["data"], "dataset": dataset}}
    path.write_text(yaml.safe_dump({"stage": stage, "out": str(tmp_path / "o"), **doc,
                                    "methods": {"a": {}}}))
    cfg = load_config(str(path))
    assert args["data_options"] == cfg["data"]
    model = args.get("model") or args["student"]
    from_cli = load_data(args["data_options"], stage=stage, seed=args["seed"], model=model,
                         weights=None)
    from_config = load_data(cfg["data"], stage=stage, seed=cfg["seed"], model=model,
                            weights=None)
    for key in ("train", "val", "test", "unlabelled"):
        assert _samples(from_cli[key]) == _samples(from_config[key]), key
    if source == "folder":  # the folder's own test/ split, whichever the command
        test = from_cli["test"]
        assert from_cli["classes"] == (2 if stage == "finetune" else 3)  # --classes 0,2
        assert (sum(len(t) for t in test) if stage == "incremental" else len(test)) == \
            5 * from_cli["classes"]


def test_distill_reads_an_image_folders_own_splits(images):
    d = load_data({**load_config_data(str(images)), "shots": 2}, stage="distill", seed=0,
                  model="resnet18", weights=None)
    assert d["classes"] == 3 and len(d["test"]) == 15 and len(d["val"]) == 15
    assert len(d["train"]) == 6 and len(d["unlabelled"]) == 9


def load_config_data(dataset):
    from ptcore.config.schema import data_section

    return data_section({"dataset": dataset, "image_size": 16}, "distill")
