"""Sums over a batch of squared per-sample gradients (the empirical Fisher's diagonal), from
one forward and one backward of the batch.

Each sample's gradient of a layer's weight is a product of what the layer saw of that
sample and the gradient at its output, so hooks that keep both give every sample's
gradient without a backward per sample (Goodfellow 2015, "Efficient per-example gradient
computations"; BackPACK and Opacus work this way): a 2-d convolution's come from its
input patches, other convolutions' from the weight gradient with the batch folded
into the groups (which torch.func's vmap does for every convolution, slowly on a CPU).
This needs the samples to be independent (BatchNorm in eval mode) and every trainable
parameter to belong to a layer handled here; otherwise :func:`squared_grads` returns None
and the caller takes ``torch.func`` (vmap over grad), which handles anything."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.grad as G

__all__ = ["squared_grads"]

_CONV_WEIGHT = {nn.Conv1d: G.conv1d_weight, nn.Conv2d: G.conv2d_weight,
                nn.Conv3d: G.conv3d_weight}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _supported(m: nn.Module) -> bool:
    if type(m) in _CONV_WEIGHT:
        return m.padding_mode == "zeros" and not isinstance(m.padding, str)
    if isinstance(m, _NORMS):  # independent samples: running statistics, eval mode
        return not m.training and m.running_mean is not None
    return type(m) is nn.Linear


def _patches(x, kernel, stride, padding, dilation, out) -> torch.Tensor:
    """[N, C·kh·kw, L]: F.unfold's patches from strided views (F.unfold is slow on a CPU)."""
    x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    rows = [x[:, :, i * dilation[0]: i * dilation[0] + (out[0] - 1) * stride[0] + 1: stride[0],
              j * dilation[1]: j * dilation[1] + (out[1] - 1) * stride[1] + 1: stride[1]]
            for i in range(kernel[0]) for j in range(kernel[1])]
    return torch.stack(rows, 2).flatten(3).flatten(1, 2)


def _per_sample(m: nn.Module, x: torch.Tensor, g: torch.Tensor) -> dict:
    """Per-sample gradients of ``m``'s parameters from its input ``x`` and the gradient
    ``g`` at its output: name -> [N, *shape], or, for a weight, the pair of factors
    (g [N, groups, out, L], patches [N, groups, in, L]) whose product over L is each
    sample's gradient (left unmultiplied: squares of sums over L = 1 need no product)."""
    n = x.shape[0]
    if type(m) is nn.Linear:
        x, g = x.reshape(n, -1, x.shape[-1]), g.reshape(n, -1, g.shape[-1])
        return {"weight": (g.transpose(1, 2)[:, None], x.transpose(1, 2)[:, None]),
                "bias": g.sum(1)}
    dims = tuple(range(2, x.dim()))
    if isinstance(m, _NORMS):
        shape = (1, -1, *[1] * len(dims))
        xhat = (x - m.running_mean.view(shape)) * (m.running_var + m.eps).rsqrt().view(shape)
        return {"weight": (g * xhat).sum(dims), "bias": g.sum(dims)}
    w, bias = m.weight, g.sum(dims)
    if type(m) is nn.Conv2d:  # the patches each output saw, times the output's gradient
        cols = _patches(x, w.shape[2:], m.stride, m.padding, m.dilation, g.shape[2:])
        cols = cols.reshape(n, m.groups, -1, cols.shape[-1])
        return {"weight": (g.reshape(n, m.groups, -1, cols.shape[-1]), cols), "bias": bias}
    # Other convolutions: the batch folded into the groups, one weight gradient per sample.
    folded = _CONV_WEIGHT[type(m)](
        x.reshape(1, -1, *x.shape[2:]), (n * w.shape[0], *w.shape[1:]),
        g.reshape(1, -1, *g.shape[2:]), m.stride, m.padding, m.dilation, n * m.groups)
    return {"weight": folded.view(n, *w.shape), "bias": bias}


def _squared_sum(grads: list, shape: torch.Size, dtype) -> torch.Tensor:
    """Σ over samples of (Σ over ``grads`` of each sample's gradient)², ``grads`` being
    what :func:`_per_sample` gave for one parameter at each call of its layer."""
    if len(grads) == 1 and isinstance(grads[0], tuple) and grads[0][0].shape[-1] == 1:
        g, cols = (t[..., 0].to(dtype) for t in grads[0])  # (g·x)² = g²·x² for each sample
        return torch.einsum("ngo,ngk->gok", g * g, cols * cols).reshape(shape)
    per = sum(torch.einsum("ngol,ngkl->ngok", *f).reshape(-1, *shape)
              if isinstance(f, tuple) else f for f in grads).to(dtype)
    return per.pow_(2).sum(0)


def squared_grads(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                  y: torch.Tensor, nll: Callable) -> dict[str, torch.Tensor] | None:
    """name -> Σ over the batch of each sample's gradient squared, for ``params`` (the
    model's trainable parameters by name), of ``nll(logits, labels)``: the mean over a
    batch of per-sample losses (times the batch size: their sum). None if a layer holding
    one of them is not handled here."""
    if not x.is_floating_point():
        return None
    owners = {}
    for prefix, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            name = f"{prefix}.{pname}" if prefix else pname
            if name in params:
                if not _supported(m):
                    return None
                owners[prefix] = m
    if not owners:
        return {}
    seen: dict[str, list] = {prefix: [] for prefix in owners}

    def keep(prefix):
        def hook(m, inputs, out):
            entry = [inputs[0].detach(), None]
            seen[prefix].append(entry)
            if out.requires_grad:
                out.register_hook(lambda g: entry.__setitem__(1, g.detach()))
        return hook

    handles = [m.register_forward_hook(keep(prefix)) for prefix, m in owners.items()]
    try:
        with torch.enable_grad():
            # A gradient asked of the input alone: the backward skips the parameters'.
            x = x.detach().requires_grad_()
            z = model(x)
            loss = nll(z.to(torch.promote_types(z.dtype, torch.float32)), y) * x.shape[0]
            torch.autograd.grad(loss, x)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for prefix, m in owners.items():
        grads: dict[str, list] = {}
        for inp, g in seen[prefix]:  # a layer called twice: its per-sample gradients add
            if g is not None:
                for pname, f in _per_sample(m, inp, g).items():
                    grads.setdefault(pname, []).append(f)
        for pname, p in m.named_parameters(recurse=False):
            name = f"{prefix}.{pname}" if prefix else pname
            if name in params:
                dtype = torch.promote_types(p.dtype, torch.float32)
                out[name] = (_squared_sum(grads[pname], p.shape, dtype) if pname in grads
                             else torch.zeros_like(p, dtype=dtype))
    return out
