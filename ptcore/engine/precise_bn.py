"""Re-estimate BatchNorm running statistics from the current weights ("precise BN").

During training a BatchNorm layer keeps an exponential moving average of batch statistics
taken while the weights were still moving. In a short fine-tuning or distillation run that
average lags badly: MobileNetV3's layers (momentum 0.01) still hold close to their initial
statistics after a hundred steps, and the model scores at chance in eval mode while it is
right in train mode. Recomputing the statistics with the final weights, as a plain average
over some training batches, removes the lag (Wu & Johnson, "Rethinking 'Batch' in
BatchNorm", 2021).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ptcore.runtime import distributed as D

__all__ = ["recompute_bn_stats"]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable, forward: Callable) -> int:
    """Set the running mean and variance of each BatchNorm layer of ``model`` that runs in
    training mode during ``forward(batch)`` to the average of its batch statistics over
    ``batches`` (no gradients). Layers that run in eval mode (frozen, or BatchNorm kept in
    eval) or do not run at all (e.g. a prefix replaced by cached features) keep theirs, and
    the forward passes themselves change no statistics. Under DDP the averages are taken
    over all processes. Returns the number of batches used."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    sums: dict[nn.Module, list] = {}  # layer -> [batches, sum of means, sum of variances]

    def record(module, args):
        if module.training:  # after any hook that switches a frozen layer to eval
            x = args[0].detach().float()
            dims = [0, *range(2, x.dim())]
            acc = sums.setdefault(module, [0, 0.0, 0.0])
            acc[0] += 1
            acc[1] = acc[1] + x.mean(dims)
            acc[2] = acc[2] + x.var(dims)  # unbiased, as BatchNorm's running_var

    handles = [m.register_forward_pre_hook(record) for m in layers]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0  # the passes below leave the running statistics as they are
    count = 0
    try:
        for batch in batches:
            forward(batch)
            count += 1
    finally:
        for m, momentum, h in zip(layers, momenta, handles):
            m.momentum = momentum
            h.remove()
    ran = [m for m in layers if m in sums]
    if not ran:
        return count
    stats = torch.cat([torch.cat([sums[m][1], sums[m][2], sums[m][1].new_full((1,), sums[m][0])])
                       for m in ran])
    stats = D.all_sum(stats)  # the same layers run on every process
    offset = 0
    for m in ran:
        c = m.num_features
        n = stats[offset + 2 * c]
        m.running_mean.copy_(stats[offset:offset + c] / n)
        m.running_var.copy_(stats[offset + c:offset + 2 * c] / n)
        offset += 2 * c + 1
    return count
