"""Split points: for every registered model the stages compose to the original forward,
and every split point cuts that sequence into a prefix and a rest."""
import pytest
import torch

from ptcore.models import (StagedModel, blocks, create_model, list_models, split_index,
                           split_model, split_points, stages)


def _small(name):
    """The model at a small input: ViTs are built for 32×32, AlexNet needs 64."""
    kwargs = {"image_size": 32} if name.startswith("vit") else {}
    size = 64 if name == "alexnet" else 32
    torch.manual_seed(0)
    return create_model(name, num_classes=3, **kwargs).eval(), torch.randn(2, 3, size, size)


# The big ones (over 80M parameters, seconds just to initialise) are marked slow.
_BIG = {"vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_16"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _BIG else n
                                  for n in list_models()])
def test_split_composition_equals_forward(name):
    model, x = _small(name)
    st = stages(model)
    with torch.no_grad():
        y = model(x)
        # Stage by stage == the original forward, bitwise: so every cut between stages
        # composes back to it.
        outs = [x]
        for s in st:
            outs.append(s.module(outs[-1]))
        torch.testing.assert_close(outs[-1], y, rtol=0, atol=0)
        points = split_points(model)
        for p in points:
            prefix, rest = split_model(model, p)
            assert len(prefix) == split_index(model, p) and len(prefix) + len(rest) == len(st)
        mid = points[len(points) // 2]
        prefix, rest = split_model(model, mid)
        torch.testing.assert_close(rest(prefix(x)), y)
        k = split_index(model, mid)
        torch.testing.assert_close(StagedModel(model)(outs[k], start=k), y)
    assert st[-1].module is model.get_submodule(st[-1].name)  # the head is last
    assert isinstance(st[-1].module, torch.nn.Linear) and st[-1].module.out_features == 3
    assert blocks(model)[-1] == (len(st) - 1, len(st))


def test_resnet_points_and_groups():
    model = create_model("resnet18", num_classes=4)
    pts = split_points(model)
    assert pts[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert {"layer1", "layer2", "layer3", "layer4", "avgpool"} <= set(pts)
    assert "fc" not in pts  # freezing the head too would leave nothing to train
    assert split_index(model, "layer3") == [s.name for s in stages(model)].index("layer3") + 1
    # conv1 and bn1 form one layer group: a norm layer belongs with the layer it normalises
    assert blocks(model)[0] == (0, 4)
    with pytest.raises(ValueError, match="unknown split point 'layer9'"):
        split_index(model, "layer9")
    with pytest.raises(ValueError, match="unknown split point 'fc'"):
        split_index(model, "fc")
    with pytest.raises(TypeError):
        split_index(model, 3.5)


def test_sequential_groups_end_after_their_last_member():
    model = create_model("alexnet", num_classes=4)
    k = split_index(model, "features")
    assert stages(model)[k - 1].name == "features.12" and stages(model)[k].name == "avgpool"
    assert "classifier" not in split_points(model)


def test_staged_model_is_a_view():
    model = create_model("resnet18", num_classes=4)
    staged = StagedModel(model)
    assert list(staged.state_dict()) == list(model.state_dict())
    assert all(a is b for a, b in zip(staged.parameters(), model.parameters()))
    with pytest.raises(TypeError, match="cannot split"):
        stages(torch.nn.Linear(2, 2))
