"""Every torchvision classifier: built, cut into stages, split, given a new head.

All 80 are built (without random initialisation) and their stages, split points, layer groups
and head replacement checked without running them: running them all takes minutes on two
cores. The smallest model of each family (each model class) runs for real: the stages compose
bitwise to the forward, prefix + rest equals the whole model at several split points,
freezing keeps BatchNorm statistics, a new head runs."""
import pytest
import torch

from ptcore.models import create_model, list_models
from tests.models.sweep import check_model, check_structure, fast_init, no_init

# Model class -> the models of it run for real (the smallest; a second where a variant
# builds other blocks: EfficientNetV2's fused blocks, RegNetY's squeeze-excitation, VGG's BN).
NUMERIC = {"AlexNet": ["alexnet"], "ConvNeXt": ["convnext_tiny"], "DenseNet": ["densenet121"],
           "EfficientNet": ["efficientnet_b0", "efficientnet_v2_s"], "GoogLeNet": ["googlenet"],
           "Inception3": ["inception_v3"], "MaxVit": ["maxvit_t"], "MNASNet": ["mnasnet0_5"],
           "MobileNetV2": ["mobilenet_v2"], "MobileNetV3": ["mobilenet_v3_small"],
           "RegNet": ["regnet_x_400mf", "regnet_y_400mf"], "ResNet": ["resnet18"],
           "ShuffleNetV2": ["shufflenet_v2_x0_5"], "SqueezeNet": ["squeezenet1_1"],
           "SwinTransformer": ["swin_t", "swin_v2_t"], "VGG": ["vgg11_bn"],
           "VisionTransformer": ["vit_b_32"]}
# The smallest input each accepts (ViTs are built for theirs; MaxViT's 7×7 partitions need
# 224); batch 1 where the input is large.
_SIZE = {"alexnet": 64, "inception_v3": 75, "maxvit_t": 224, "vit_h_14": 28}


def _build(name, init):
    size = _SIZE.get(name, 32)
    kwargs = {"image_size": size} if name.startswith("vit_") else {}
    torch.manual_seed(0)
    with init():
        model = create_model(name, num_classes=3, **kwargs)
    return model, torch.randn(1 if size > 100 else 2, 3, size, size)


def test_the_sweep_covers_every_classifier():
    import torchvision

    assert list_models() == sorted(torchvision.models.list_models(module=torchvision.models))
    assert len(list_models()) >= 80
    assert {n for names in NUMERIC.values() for n in names} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_structure(name):
    model, _ = _build(name, no_init)
    assert type(model).__name__ in NUMERIC, f"no numeric check for {type(model).__name__}"
    check_structure(model)


@pytest.mark.parametrize("name", [n for names in NUMERIC.values() for n in names])
def test_numerics(name):
    model, x = _build(name, fast_init)
    assert name in NUMERIC[type(model).__name__]
    check_model(model, x)
