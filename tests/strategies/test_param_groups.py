"""Weight decay follows timm's convention for every model: none on 1-D parameters (norms,
biases) and on the tensors a model lists (timm's no_weight_decay(): ViT's cls_token and
pos_embed), with the layer-wise learning rates kept."""
import pytest
import torch
import torchvision

from ptcore.models import create_model
from ptcore.strategies import Distill, FineTune
from ptcore.strategies._param_groups import weight_decay_groups


def _names(model, groups, decayed: bool) -> set[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for g in groups if bool(g["weight_decay"]) == decayed
            for p in g["params"]}


def test_timm_vit_tokens_get_no_weight_decay_and_adamw_leaves_them_undecayed():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = create_model("timm/vit_tiny_patch16_224", num_classes=5, img_size=32,
                         patch_size=8, depth=2, embed_dim=32, num_heads=2)
    lr, wd = 1e-2, 0.1
    ft = FineTune(model, mode="full", lr=lr, layer_decay=0.5, weight_decay=wd, progress=False)
    groups = ft.optimizer.param_groups
    undecayed = _names(model, groups, decayed=False)
    # expected from the model's own declaration and the tensors' shapes, not from ptcore
    listed = {n for n, _ in model.named_parameters() if n in model.no_weight_decay()}
    assert listed == {"pos_embed", "cls_token"}
    assert undecayed == listed | {n for n, p in model.named_parameters() if p.ndim == 1}
    assert _names(model, groups, decayed=True) == {
        n for n, p in model.named_parameters() if p.ndim > 1} - listed
    # layer-wise rates kept: the tokens sit in the first block's (undecayed) group
    lr_of = {n: g["lr"] for g in groups for n in _names(model, [g], bool(g["weight_decay"]))}
    assert lr_of["pos_embed"] == lr_of["cls_token"] == lr_of["patch_embed.proj.weight"] < lr
    assert lr_of["head.weight"] == lr

    # One AdamW step from fixed gradients. First step: m̂ = g, v̂ = g², so the Adam term is
    # lr·g/(|g|+eps); decoupled decay would add −lr·wd·p. Reference in float64.
    with torch.no_grad():  # values of size 1 (timm starts cls_token at 1e-6): decay shows
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    ft.optimizer.step()
    eps = groups[0]["eps"]
    for n, p in model.named_parameters():
        g, p0 = grads[n].double(), before[n]
        adam = lr_of[n] * g / (g.abs() + eps)
        decay = lr_of[n] * wd * p0 if n not in undecayed else 0.0
        torch.testing.assert_close(p.detach().double(), p0 - decay - adam, rtol=1e-5,
                                   atol=1e-7, msg=n)
        if n in listed:  # only the gradient term moved it
            assert not torch.allclose(p.detach().double(), p0 * (1 - lr_of[n] * wd) - adam)


def test_torchvision_models_follow_the_same_rule():
    from torchvision.models.swin_transformer import SwinTransformer

    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1,
                                               num_heads=2, hidden_dim=16, mlp_dim=32)
    swin = SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2], num_heads=[1],
                           window_size=[2, 2])
    tables = {f"features.1.{i}.attn.relative_position_bias_table" for i in (0, 1)}
    for model, listed in ((vit, {"class_token", "encoder.pos_embedding"}), (swin, tables)):
        groups = weight_decay_groups(model, 0.05)
        assert _names(model, groups, decayed=False) == listed | {
            n for n, p in model.named_parameters() if p.ndim == 1}
        assert _names(model, groups, decayed=True) == {
            n for n, p in model.named_parameters() if p.ndim > 1} - listed


def test_a_distilled_student_gets_the_same_groups():
    teacher = create_model("resnet18", num_classes=4)
    student = create_model("mobilenet_v3_small", num_classes=4)
    d = Distill(teacher, student, weight_decay=0.05, progress=False)
    groups = d.optimizer.param_groups
    assert _names(student, groups, decayed=False) == {
        n for n, p in student.named_parameters() if p.ndim == 1}
    assert all(g["weight_decay"] == 0.05 for g in groups if g["weight_decay"])
