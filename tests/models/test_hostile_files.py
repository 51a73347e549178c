"""No file ptcore reads runs code: a pickle whose __reduce__ writes a marker file, offered
as --weights, as teacher weights, as last.pt on resume and as a torchvision weights file in
the torch hub cache, is refused with an error and the marker never appears."""
import os

import pytest
import torch

from ptcore.cli import main
from ptcore.engine import UnreadableFileError, fit
from ptcore.models import create_model


class Hostile:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")  # unpickling creates the marker file


def hostile_file(path, marker, ptcore_checkpoint=False):
    obj = {"fc.weight": torch.zeros(2, 2), "evil": Hostile(marker)}
    if ptcore_checkpoint:
        obj = {"format": "ptcore.checkpoint", "version": 2, "model": obj, "epoch": 1}
    torch.save(obj, path)
    # the file is really hostile: an unrestricted load runs it
    torch.load(path, weights_only=False)
    assert os.path.exists(marker)
    os.unlink(marker)
    return str(path)


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "pwned"
    yield m
    assert not m.exists(), "code from a file ran"


def test_hostile_weights_and_teacher_weights_on_the_command_line(tmp_path, marker, capsys):
    bad = hostile_file(tmp_path / "w.pt", marker)
    assert main(["finetune", "--model", "resnet18", "--weights", bad, "--image-size", "16",
                 "--out", str(tmp_path / "a")]) == 2
    assert main(["distill", "--teacher", "resnet18", "--teacher-weights", bad, "--student",
                 "resnet18", "--image-size", "16", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("never runs code from a file") == 2 and "Traceback" not in err


def test_a_hostile_checkpoint_on_resume(tmp_path, marker):
    hostile_file(tmp_path / "last.pt", marker, ptcore_checkpoint=True)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(UnreadableFileError, match="last.pt"):
        fit(model, [(torch.zeros(2), 0)], torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=1, batch_size=1, out_dir=tmp_path, resume=True, progress=False)


def test_a_hostile_file_in_the_torch_hub_cache(tmp_path, marker, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("the cached file must be used"))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    hostile_file(tmp_path / "hub" / "checkpoints" / os.path.basename(url), marker)
    with pytest.raises(UnreadableFileError, match="never runs code"):
        create_model("resnet18", weights="IMAGENET1K_V1")


def test_offline_named_weights_are_a_user_error(tmp_path, monkeypatch, capsys):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["finetune", "--model", "resnet18", "--weights", "IMAGENET1K_V1",
                 "--image-size", "16", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "could not get torchvision weights resnet18/IMAGENET1K_V1" in err
    assert len(err.strip().splitlines()) == 1


def test_safetensors_weights_load(tmp_path):
    from safetensors.torch import save_file

    model = create_model("resnet18", num_classes=3)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    again = create_model("resnet18", weights=tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values()))
