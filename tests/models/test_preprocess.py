"""Preprocessing follows the weights: torchvision's own transform, timm's data config,
ImageNet defaults without weights, overrides; `ptcore models` lists and describes."""
import pytest
import torch
from PIL import Image

from ptcore.cli import main
from ptcore.models import train_transform  # public here; its home is ptcore.data.augment
from ptcore.models.preprocess import eval_transform, preprocessing


@pytest.fixture
def image():
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (300, 260, 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def test_torchvision_weights_bring_their_transform(image):
    import torchvision

    w = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    p = preprocessing("resnet50", "IMAGENET1K_V2")
    assert (p.crop_size, p.resize_size, p.interpolation) == (224, 232, "bilinear")
    assert torch.equal(eval_transform(p)(image), w.transforms()(image))
    eff = preprocessing("efficientnet_b0", "DEFAULT")
    assert eff.interpolation == "bicubic"
    swag = preprocessing("vit_b_16", "IMAGENET1K_SWAG_E2E_V1")
    assert swag.crop_size == 384 and eval_transform(swag)(image).shape == (3, 384, 384)
    # the train transform keeps size, interpolation and normalisation
    x = train_transform(eff)(image)
    assert x.shape == (3, 224, 224) and x.mean().abs() < 3


def test_defaults_and_overrides(image):
    p = preprocessing("resnet18")
    assert (p.crop_size, p.resize_size, p.mean) == (224, 256, (0.485, 0.456, 0.406))
    small = preprocessing("resnet50", "IMAGENET1K_V2", image_size=112)
    assert (small.crop_size, small.resize_size, small.native) == (112, 116, None)
    assert eval_transform(small)(image).shape == (3, 112, 112)
    odd = preprocessing("resnet18", interpolation="bicubic", mean=[0.5] * 3, std=[0.5] * 3)
    x = eval_transform(odd)(image.convert("L"))  # grey input becomes RGB
    assert x.shape == (3, 224, 224) and odd.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="unknown preprocessing field"):
        preprocessing("resnet18", crop=3)
    with pytest.raises(ValueError, match="interpolation"):
        preprocessing("resnet18", interpolation="lanczos9")
    with pytest.raises(ValueError, match="unknown weights"):
        preprocessing("resnet18", "IMAGENET9K")


def test_timm_data_config(image):
    pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    p = preprocessing("timm/convnext_tiny", "DEFAULT")
    cfg = resolve_data_config(pretrained_cfg=get_pretrained_cfg("convnext_tiny").to_dict())
    assert (p.crop_size, p.interpolation) == (cfg["input_size"][-1], cfg["interpolation"])
    assert torch.equal(eval_transform(p)(image), create_transform(**cfg)(image))


def test_models_command(capsys):
    assert main(["models", "--filter", "resnet1*"]) == 0
    assert capsys.readouterr().out.split() == ["resnet101", "resnet152", "resnet18"]
    assert main(["models", "--filter", "convnext_tiny", "--splits", "--weights",
                 "DEFAULT"]) == 0
    out = capsys.readouterr().out
    assert "features.7" in out and "resize 236, bilinear" in out and "crop 224" in out
    assert main(["models", "--filter", "resnet", "--weights", "DEFAULT"]) == 2
    assert "exactly one model" in capsys.readouterr().err


def test_models_command_timm(capsys):
    pytest.importorskip("timm")
    assert main(["models", "--timm", "--filter", "resnet50d", "--splits"]) == 0
    out = capsys.readouterr().out
    assert "timm/resnet50d: split points" in out and "layer3" in out
