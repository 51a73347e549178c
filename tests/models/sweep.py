"""Shared by the model sweeps: build big models fast, and check one model's stages."""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

from ptcore.models import (StagedModel, blocks, freeze, get_head, get_heads, head_path,
                           head_paths, head_width, replace_head, split_index, split_model,
                           split_points, stages)

# A fixed pseudo-random pool (prime length, so rows never line up with its period): filling
# weights from it is a memory copy, where torch's random init of the ~4.5 billion parameters of
# all torchvision classifiers takes minutes on two cores. The sweep checks structure, not
# training, so any finite, non-degenerate weights serve.
_POOL = torch.rand(65521, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _fill(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    fan_in = tensor[0].numel() if tensor.ndim > 1 else 1
    scale = math.sqrt(6.0 / fan_in) if tensor.ndim > 1 else 0.02
    flat, pool = tensor.data.view(-1), _POOL * scale
    n = pool.numel()
    whole = flat.numel() // n * n
    with torch.no_grad():
        flat[:whole].view(-1, n).copy_(pool.expand(whole // n, n))
        flat[whole:].copy_(pool[:flat.numel() - whole])
    return tensor


def _keep(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


@contextlib.contextmanager
def _random_init(replacement):
    names = ["normal_", "trunc_normal_", "uniform_", "kaiming_normal_", "kaiming_uniform_",
             "xavier_uniform_", "xavier_normal_", "orthogonal_"]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, replacement)
        yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)


def fast_init():
    """torch.nn.init's random initialisers replaced by :func:`_fill` (constant ones stay)."""
    return _random_init(_fill)


def no_init():
    """No random initialisation at all: the memory of a model built inside stays untouched
    (lazily allocated), for a model moved to the meta device right after."""
    return _random_init(_keep)


def check_structure(model: nn.Module) -> list[str]:
    """Without running the model (a forward of every big model costs minutes here): its
    stages hold every parameter once, the head last; every split point cuts them; the layer
    groups end with the head; a head of another size takes its place."""
    st = stages(model)
    owned = [id(p) for s in st for p in s.module.parameters()]
    assert sorted(owned) == sorted(id(p) for p in model.parameters()), "stages miss parameters"
    assert len({s.name for s in st}) == len(st)
    assert get_head(model) is model.get_submodule(head_path(model))
    assert head_path(model) == st[-1].name or head_path(model).startswith(st[-1].name + ".")
    _heads_in_last_stage(model)
    points = split_points(model)
    assert points
    for p in points:
        prefix, rest = split_model(model, p)
        assert len(prefix) == split_index(model, p) and len(prefix) + len(rest) == len(st)
    assert blocks(model)[-1] == (len(st) - 1, len(st))
    replace_head(model, 5)
    _heads_in_last_stage(model, width=5)
    return points


def _heads_in_last_stage(model: nn.Module, width: int | None = None) -> None:
    """Every classifier (two in timm's distilled models) sits in the last stage, the head
    group, with ``width`` outputs."""
    last = list(stages(model)[-1].module.modules())
    heads = get_heads(model)
    assert len(heads) == len(head_paths(model)) and heads[0] is get_head(model)
    for h in heads:
        assert any(m is h for m in last), "a classifier outside the last stage"
        assert width is None or head_width(h) == width


@torch.no_grad()
def check_model(model: nn.Module, x: torch.Tensor, *, n_points: int = 3) -> list[str]:
    """The checks every model passes; returns its split points."""
    model.eval()
    st = stages(model)
    y = model(x)
    assert torch.isfinite(y).all() and y.std() > 0, "degenerate output"
    outs, z = [x], x.clone()
    for s in st:  # clones: a stage may work in place on its input (ReLU(inplace=True))
        z = s.module(z)
        outs.append(z.clone())
    torch.testing.assert_close(outs[-1], y, rtol=0, atol=0)  # the stages are the forward
    points = split_points(model)
    assert points, "no split point"
    picks = sorted({points[0], points[len(points) // 2], points[-1]})[:n_points]
    staged = StagedModel(model)
    for p in picks:
        k = split_index(model, p)
        prefix, rest = split_model(model, p)
        assert len(prefix) == k and len(prefix) + len(rest) == len(st)
        torch.testing.assert_close(rest(outs[k].clone()), y, rtol=1e-5, atol=1e-5)
    mid = split_index(model, picks[len(picks) // 2])
    torch.testing.assert_close(staged(outs[mid].clone(), start=mid), y, rtol=1e-5, atol=1e-5)
    prefix, _ = split_model(model, mid)
    torch.testing.assert_close(prefix(x.clone()), outs[mid], rtol=0, atol=0)
    assert blocks(model)[-1] == (len(st) - 1, len(st))  # the head is its own layer group
    # freezing a prefix keeps its BatchNorm statistics, even under model.train()
    freeze(prefix)
    before = {n: b.clone() for n, b in prefix.named_buffers()}
    model.train()
    prefix(x.clone())
    assert all(torch.equal(b, before[n]) for n, b in prefix.named_buffers())
    model.eval()
    # a new head of another size runs from the cached penultimate output
    replace_head(model, 5)
    _heads_in_last_stage(model, width=5)
    assert StagedModel(model)(outs[-2].clone(), start=len(st) - 1).shape == (x.shape[0], 5)
    return points
