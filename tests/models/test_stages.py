"""Split points of known models, their names and layer groups (every classifier is swept in
test_sweep_torchvision.py)."""
import pytest
import torch

from ptcore.models import StagedModel, blocks, create_model, split_index, split_points, stages


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
