"""A representative set of timm families, checked like the torchvision sweep: stages
compose to the forward, split points, layer groups from timm's group_matcher, frozen
BatchNorm, a new head."""
import pytest
import torch

from ptcore.models import blocks, create_model, stages
from tests.models.sweep import check_model, fast_init

timm = pytest.importorskip("timm")

# (timm name, constructor arguments for a small input, input size): CNNs, ViTs (class token,
# RoPE, class attention, cross-covariance), hierarchical transformers, hybrid models,
# multi-resolution HRNet, re-parameterisable FastViT, and the distilled models that average
# two classifiers (DeiT's head + head_dist on two tokens, LeViT's NormLinear pair,
# EfficientFormer; the latter's attention biases fix its input at 224, so it is built narrow).
FAMILIES = [
    ("resnet50d", {}, 32), ("efficientnet_b0", {}, 32), ("mobilenetv3_small_050", {}, 32),
    ("ghostnet_100", {}, 32), ("hgnetv2_b0", {}, 32), ("regnetx_002", {}, 32),
    ("convnext_atto", {}, 32), ("edgenext_xx_small", {}, 64), ("poolformer_s12", {}, 32),
    ("vit_tiny_patch16_224", {"img_size": 32}, 32),
    ("eva02_tiny_patch14_224", {"img_size": 28}, 28),
    ("cait_xxs24_224", {"img_size": 32}, 32), ("xcit_nano_12_p16_224", {"img_size": 32}, 32),
    ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 2}, 64),
    ("maxvit_nano_rw_256", {"img_size": 64}, 64), ("coatnet_nano_rw_224", {"img_size": 64}, 64),
    ("mobilevit_xxs", {}, 64), ("fastvit_t8", {}, 64),
    ("hrnet_w18_small", {}, 64), ("efficientvit_b0", {}, 64),
    ("deit_tiny_distilled_patch16_224", {"img_size": 32, "depth": 3}, 32),
    ("levit_128s", {"img_size": 64}, 64),
    ("efficientformer_l1", {"depths": (1, 1, 1, 2), "embed_dims": (8, 16, 24, 32)}, 224),
]


@pytest.mark.parametrize("name,kwargs,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_timm_family(name, kwargs, size):
    torch.manual_seed(0)
    with fast_init():
        model = create_model(f"timm/{name}", num_classes=3, **kwargs)
    check_model(model, torch.randn(2, 3, size, size))
    # timm's own layer groups: the stem, then its stages or blocks, then the head
    assert len(blocks(model)) >= 4


def test_group_matcher_sets_the_layer_groups():
    model = create_model("timm/resnet18", num_classes=3)
    names = [s.name for s in stages(model)]
    groups = [[names[i] for i in range(a, b)] for a, b in blocks(model)]
    assert groups == [["conv1", "bn1", "act1", "maxpool"], ["layer1"], ["layer2"], ["layer3"],
                      ["layer4", "global_pool"], ["fc"]]


def test_functional_dropout_follows_train_and_eval():
    """timm's forward_head calls F.dropout(training=self.training): the stage holding it
    must drop in train mode and not in eval mode, whatever the mode was when traced."""
    with fast_init():
        model = create_model("timm/ghostnet_100", num_classes=3, drop_rate=0.5).train()
    x = torch.randn(4, 3, 32, 32)
    tail = stages(model)[-2].module  # flatten + dropout
    feats = torch.randn(4, 1280, 1, 1)
    assert not torch.equal(tail(feats), tail(feats))  # random: train mode
    model.eval()
    tail = stages(model)[-2].module
    assert torch.equal(tail(feats), feats.flatten(1))
    with torch.no_grad():
        y = model(x)
        z = x
        for s in stages(model):
            z = s.module(z)
    torch.testing.assert_close(z, y, rtol=0, atol=0)


def test_two_classifiers_are_one_head():
    """DeiT distilled averages head and head_dist: both are replaced and grown together
    (old rows kept), and the model still computes the average of the two."""
    from ptcore.models import expand_head, get_heads, head_paths

    torch.manual_seed(0)
    model = create_model("timm/deit_tiny_distilled_patch16_224", num_classes=3, img_size=32,
                         depth=1).eval()
    assert head_paths(model) == ["head", "head_dist"]
    assert stages(model)[-1].name == "head"
    old = [(h.weight.detach().clone(), h.bias.detach().clone()) for h in get_heads(model)]
    expand_head(model, 2)
    heads = get_heads(model)
    assert [h.out_features for h in heads] == [5, 5]
    for h, (w, b) in zip(heads, old):
        assert torch.equal(h.weight[:3], w) and torch.equal(h.bias[:3], b)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        expected = (model.head(tokens[:, 0]) + model.head_dist(tokens[:, 1])) / 2
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
        z = x
        for s in stages(model):
            z = s.module(z)
    torch.testing.assert_close(z, expected, rtol=0, atol=0)
