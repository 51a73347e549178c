"""Freezing: frozen parameters stay bitwise unchanged and frozen BatchNorm keeps its running
statistics while the rest trains; BN modes of the trainable part."""
import copy

import torch
import torch.nn.functional as F

from ptcore.models import (create_model, freeze, is_frozen, set_bn_mode, split_model,
                           unfreeze)


def _bn_stats(module):
    return {n: b.clone() for n, b in module.named_buffers()}


def _train_steps(model, steps=3):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(4, 3, 32, 32, generator=g) * 3 + 1  # far from the init statistics
        loss = F.cross_entropy(model(x), torch.randint(0, 3, (4,), generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_frozen_prefix_unchanged_and_bn_stats_do_not_drift():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3)
    prefix, rest = split_model(model, "layer2")
    freeze(prefix)
    params = {n: p.clone() for n, p in prefix.named_parameters()}
    stats = _bn_stats(prefix)
    rest_stats = _bn_stats(rest)
    _train_steps(model)  # model.train() is called: frozen layers must stay in eval mode
    for n, p in prefix.named_parameters():
        assert torch.equal(p, params[n]), n
        assert p.grad is None
    for n, b in prefix.named_buffers():
        assert torch.equal(b, stats[n]), n
    # the trainable part did learn and its BN did update
    assert any(not torch.equal(b, rest_stats[n]) for n, b in rest.named_buffers()
               if n.endswith("running_mean"))
    assert all(not m.training for m in prefix.modules())


def test_freeze_survives_deepcopy_and_unfreeze_restores():
    model = create_model("resnet18", num_classes=3)
    freeze(model.layer1)
    clone = copy.deepcopy(model)
    assert is_frozen(clone.layer1) and not is_frozen(clone.layer2)
    clone.train()
    clone(torch.randn(2, 3, 32, 32))
    assert not clone.layer1[0].bn1.training and clone.layer2[0].bn1.training
    unfreeze(clone.layer1)
    clone.train()
    clone(torch.randn(2, 3, 32, 32))
    assert clone.layer1[0].bn1.training
    assert all(p.requires_grad for p in clone.parameters())


def test_bn_modes_of_the_trainable_part():
    model = create_model("resnet18", num_classes=3)
    set_bn_mode(model, "eval")
    stats = _bn_stats(model)
    _train_steps(model, steps=1)
    assert all(torch.equal(b, stats[n]) for n, b in model.named_buffers())
    assert model.bn1.weight.requires_grad  # eval: affine still trains
    set_bn_mode(model, "frozen")
    assert not model.bn1.weight.requires_grad and model.conv1.weight.requires_grad
    set_bn_mode(model, "train")
    _train_steps(model, steps=1)
    assert not torch.equal(model.bn1.running_mean, stats["bn1.running_mean"])
    try:
        set_bn_mode(model, "sometimes")
    except ValueError as e:
        assert "bn must be one of" in str(e)
    else:
        raise AssertionError("bad bn mode accepted")
