"""The image size when none is given (`--image-size`, `data.image_size` unset): image files
reach the model at its weights' own crop size (the student's, for distill), not at the
32 px the in-memory datasets are rendered at; `digits`/`glyphs` keep 32, and an explicit
size keeps its meaning.

The size is observed where it matters: the batches that reach the first convolution of every
model a run creates. The weights are mobilenet_v3_small's DEFAULT (crop 224), planted in a
torch hub cache of the test's own (tests/helpers.py)."""
import json

import pytest
import torch
import torchvision

from ptcore.cli import main
from ptcore.config import ConfigError
from ptcore.config.schema import validate_config
from ptcore.data import dataset_from_spec, glyph_characters
from tests.data.formats import write_image_folder
from tests.helpers import plant_torchvision_weights, stage_config

MODEL = "mobilenet_v3_small"
SOURCE = f"torchvision {MODEL}.DEFAULT"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: threads cost more than they give
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def input_sizes(monkeypatch):
    """(height, width) of every batch that reaches the first convolution of a model the
    run creates."""
    import ptcore.models as M

    seen, real = [], M.create_model

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_pre_hook(lambda _, x: seen.append(tuple(x[0].shape[-2:])))
        return model

    monkeypatch.setattr(M, "create_model", spy)
    return seen


@pytest.fixture
def weights_crop(tmp_path, monkeypatch) -> int:
    _, native = plant_torchvision_weights(tmp_path, monkeypatch, MODEL)
    assert native.crop_size == [224]  # not 32, not some other default: the check means it
    return native.crop_size[0]


def test_finetune_reads_image_files_at_the_weights_crop_size(tmp_path, weights_crop,
                                                             input_sizes):
    write_image_folder(tmp_path / "pets", per_class=2)  # train/ val/ test/, 40 px images
    out = tmp_path / "run"
    assert main(["finetune", "--model", MODEL, "--weights", "DEFAULT", "--data",
                 str(tmp_path / "pets"), "--tune", "linear", "--epochs", "1",
                 "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    assert input_sizes and set(input_sizes) == {(weights_crop, weights_crop)}
    recorded = json.loads((out / "summary.json").read_text())["preprocessing"]
    assert recorded["crop_size"] == weights_crop and recorded["source"] == SOURCE


def test_run_reads_image_files_at_the_weights_crop_size(tmp_path, weights_crop, input_sizes):
    """`ptcore run` with configs that leave data.image_size out: a finetune stage with the
    DEFAULT weights, and a pretrain stage from random weights (the ImageNet defaults, 224
    too), whose provenance.json records the size the images were read at."""
    write_image_folder(tmp_path / "pets", per_class=2)
    common = {"data": {"dataset": str(tmp_path / "pets")}, "strategy": {"mode": "linear"},
              "engine": {"epochs": 1, "batch_size": 4}}
    pretrain = stage_config(tmp_path, "pretrain", tmp_path / "pre", model={"name": MODEL},
                            **common)
    finetune = stage_config(tmp_path, "finetune", tmp_path / "ft",
                            model={"name": MODEL, "weights": "DEFAULT"}, **common)
    assert main(["run", pretrain, finetune, "--no-progress"]) == 0
    assert input_sizes and set(input_sizes) == {(weights_crop, weights_crop)}
    provenance = json.loads((tmp_path / "pre" / "pretrain" / "provenance.json").read_text())
    assert provenance["source"]["image_size"] == 224
    assert provenance["config"]["data"]["image_size"] is None  # as the user wrote it


def test_distill_reads_image_files_at_the_students_preprocessing(tmp_path, weights_crop,
                                                                input_sizes):
    """A plain ImageFolder, the student with its DEFAULT weights, augmented: the student and
    the teacher (which gets the student's inputs) see the student's crop size."""
    write_image_folder(tmp_path / "pets", splits=("",), per_class=4)  # pets/<class>/<i>
    teacher = tmp_path / "teacher.pt"
    torch.save(torchvision.models.get_model(MODEL, num_classes=2).state_dict(), teacher)
    out = tmp_path / "run"
    assert main(["distill", "--teacher", MODEL, "--teacher-weights", str(teacher),
                 "--student", MODEL, "--student-weights", "DEFAULT", "--data",
                 str(tmp_path / "pets"), "--val", "0.25", "--test", "0.25",
                 "--shots", "1", "--augment", "basic", "--epochs", "1",
                 "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    assert input_sizes and set(input_sizes) == {(weights_crop, weights_crop)}
    recorded = json.loads((out / "summary.json").read_text())["preprocessing"]
    assert recorded["crop_size"] == weights_crop and recorded["source"] == SOURCE


@pytest.mark.parametrize("argv, size", [([], 32), (["--image-size", "16"], 16)])
def test_finetune_renders_digits_at_32_unless_told(tmp_path, input_sizes, argv, size):
    """In-memory digits, augmented (a random crop of the tensors at their rendered size)."""
    assert main(["finetune", "--model", MODEL, "--data", "digits", "--classes", "0,1",
                 "--tune", "linear", "--augment", "basic", "--epochs", "1", "--batch-size",
                 "128", "--out", str(tmp_path / "run"), "--no-progress", *argv]) == 0
    assert input_sizes and set(input_sizes) == {(size, size)}


def test_in_memory_datasets_render_at_32_unless_told(monkeypatch):
    from ptcore.data import glyphs

    real = glyphs.GlyphsDataset  # 30,000 images by default: a few suffice here
    monkeypatch.setattr(glyphs, "GlyphsDataset",
                        lambda image_size: real(4, image_size, characters=glyph_characters()[:2]))
    for spec in ("digits", "glyphs"):
        assert dataset_from_spec(spec)[0][0].shape == (3, 32, 32)
        assert dataset_from_spec(spec, image_size=16)[0][0].shape == (3, 16, 16)


def test_config_image_size_is_unset_by_default():
    cfg = {"stage": "finetune", "out": "o", "model": {"name": MODEL}}
    assert validate_config(cfg)["data"]["image_size"] is None
    assert validate_config({**cfg, "data": {"image_size": None}})["data"]["image_size"] is None
    assert validate_config({**cfg, "data": {"image_size": 16}})["data"]["image_size"] == 16
    with pytest.raises(ConfigError, match="data.image_size must be null or >= 8"):
        validate_config({**cfg, "data": {"image_size": 4}})
