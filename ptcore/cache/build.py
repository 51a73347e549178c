"""Running the frozen module over (part of) a dataset, in inference mode, leaving the
module exactly as it was given."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch.utils.data import Subset

from ptcore.engine.loaders import make_loader
from ptcore.ops import quantize_rows

__all__ = ["inference", "module_device", "run_module", "encode"]


@contextmanager
def inference(module: torch.nn.Module):
    """eval() + no_grad() for the duration, then each submodule's own training flag back
    (eval keeps BatchNorm from updating its running statistics)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def module_device(module: torch.nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def _split(batch):
    """(inputs, labels or None) of a collated batch of ``x`` or ``(x, label, ...)`` items."""
    if not isinstance(batch, (tuple, list)):
        return batch, None
    if len(batch) == 1:
        return batch[0], None
    y = batch[1]
    if not (isinstance(y, torch.Tensor) and y.dim() == 1 and
            not y.dtype.is_floating_point and not y.dtype.is_complex):
        raise TypeError("dataset labels (the second element of each item) must be integers, got "
                        + (f"a {y.dtype} tensor of shape {tuple(y.shape)}"
                           if isinstance(y, torch.Tensor) else type(y).__name__))
    return batch[0], y.to(torch.int64)


def run_module(module: torch.nn.Module, dataset, items: Sequence[int], batch_size: int,
               num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``module(x)`` ``[b, *sample_shape]`` with the labels, for dataset ``items`` in order.
    The module must be inside :func:`inference`."""
    device = module_device(module)
    loader = make_loader(Subset(dataset, items), batch_size, num_workers=num_workers,
                         device=device)
    for batch in loader:
        x, y = _split(batch)
        out = module(x.to(device, non_blocking=True))
        if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != x.shape[0]:
            raise TypeError("the module must return one tensor [batch, ...], got "
                            f"{type(out).__name__}{tuple(getattr(out, 'shape', ()))}")
        if not bool(torch.isfinite(out).all()):
            raise RuntimeError("the module's output contains inf or NaN; a cache would "
                               "serve it to every epoch, so it is refused")
        yield out, y


def encode(out: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``out`` ``[b, ...]`` as rows ``[b, D]`` in the storage dtype: int8 codes + per-row
    scales, or a float cast."""
    out = out.reshape(out.shape[0], -1)
    if dtype == torch.int8:
        if out.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            out = out.float()
        return quantize_rows(out.contiguous())
    return out.to(dtype).contiguous(), None
