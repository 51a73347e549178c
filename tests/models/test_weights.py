"""Weights: local state_dicts and ptcore checkpoints load offline; head sizes; clear errors
for a missing download, a wrong architecture, a missing file."""
import urllib.error

import pytest
import torch

from ptcore.engine import save_checkpoint
from ptcore.models import create_model, expand_head, get_head, list_models, replace_head


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_local_state_dict_and_checkpoint_load_offline(tmp_path):
    torch.manual_seed(0)
    src = create_model("resnet18", num_classes=5)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    assert _same(create_model("resnet18", weights=tmp_path / "w.pt"), src)  # head size from file
    save_checkpoint(tmp_path / "ckpt.pt", src.state_dict(), epoch=1)
    assert _same(create_model("resnet18", weights=str(tmp_path / "ckpt.pt")), src)
    # a DDP-saved state_dict carries "module."
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "ddp.pt")
    assert _same(create_model("resnet18", weights=tmp_path / "ddp.pt"), src)


def test_new_num_classes_keeps_backbone_and_reinitialises_head(tmp_path):
    src = create_model("resnet18", num_classes=5)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    m = create_model("resnet18", num_classes=3, weights=tmp_path / "w.pt")
    assert get_head(m).out_features == 3
    assert torch.equal(m.layer4[1].conv2.weight, src.layer4[1].conv2.weight)


def test_weight_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model("resnet18", weights=tmp_path / "nope.pt")
    torch.save(create_model("resnet34", num_classes=2).state_dict(), tmp_path / "r34.pt")
    with pytest.raises(ValueError, match="do not fit resnet18"):
        create_model("resnet18", weights=tmp_path / "r34.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="unreadable or corrupt"):
        create_model("resnet18", weights=tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9K'"):
        create_model("resnet18", weights="IMAGENET9K")
    with pytest.raises(ValueError, match="unknown model 'resnet7'"):
        create_model("resnet7")
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet18", num_classes=0)

    def offline(url, *a, **k):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="weights=PATH") as e:
        create_model("resnet18", weights="DEFAULT")
    assert "resnet18-" in str(e.value)  # names the file to put in the hub cache


def test_expand_head_keeps_old_classes():
    m = create_model("alexnet", num_classes=4)
    old = get_head(m).weight.detach().clone()
    expand_head(m, 3)
    assert get_head(m).out_features == 7 and torch.equal(get_head(m).weight[:4], old)
    replace_head(m, 2)
    assert get_head(m).out_features == 2 and m.classifier[6] is get_head(m)


def test_registry_has_the_required_models():
    required = {"resnet18", "resnet34", "resnet50", "alexnet", "vgg11", "vgg16", "vgg19",
                "vgg11_bn", "vgg16_bn", "vgg19_bn", "mobilenet_v3_small", "efficientnet_b0",
                "vit_b_16"}
    assert required <= set(list_models())
