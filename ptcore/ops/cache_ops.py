"""ptcore.ops.quantize_rows / gather_rows: the compact storage under ptcore.FeatureCache."""
from __future__ import annotations

import torch

from ptcore import reference
from ptcore._extension import has_native

__all__ = ["quantize_rows", "gather_rows"]


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Symmetric int8 quantization of each row of ``x``.

    Shapes: ``x`` ``[M, D]`` float32/float16/bfloat16 → ``codes`` ``[M, D]`` int8 and
    ``scales`` ``[M]`` float32, with

    .. math::
        s_i = \max_j |x_{ij}| / 127, \qquad c_{ij} = \mathrm{round}(x_{ij} / s_i) \in [-127, 127]

    (round half to even), so :math:`|c_{ij} s_i - x_{ij}| \le s_i / 2`. An all-zero row gets
    scale 0 and zero codes. A row holding inf or NaN gets a non-finite scale and zero codes,
    so it dequantizes to NaN rather than to plausible numbers (FeatureCache refuses such
    features before they reach this op).
    """
    if has_native():
        return torch.ops.ptcore.quantize_rows(x)
    return reference.quantize_rows(x)


def gather_rows(store: torch.Tensor, scales: torch.Tensor | None, indices: torch.Tensor,
                dtype: torch.dtype | None = None, *,
                out: torch.Tensor | None = None) -> torch.Tensor:
    r"""Fused gather + dequantize: ``out[b] = store[indices[b]] · scales[indices[b]]``.

    Shapes: ``store`` ``[M, D]`` (int8 codes with ``scales`` ``[M]`` float32, or
    float32/float16/bfloat16 with ``scales=None``), ``indices`` ``[B]`` int64 on the same
    device → ``[B, D]`` in ``dtype`` (float32, float16 or bfloat16; default ``out.dtype``
    when ``out`` is given, else float32), in one pass over the selected rows. Duplicate
    indices are fine; ``B = 0`` gives ``[0, D]``.

    ``out``: a ``[B, D]`` contiguous tensor of ``dtype`` on the store's device, not
    overlapping ``store``, ``scales`` or ``indices``, to gather into instead of a new
    tensor (returned). Reusing one across batches saves allocating and page-faulting fresh
    memory per batch; pinned memory makes a later copy to the GPU asynchronous.

    A negative or out-of-range index raises ``IndexError`` naming the first bad position,
    with the same message on CPU and CUDA, and no row outside the store is read (``out``
    may then be partly written). CPU always checks, fused into the gather. CUDA checks on
    the device and reads one flag back (a stream sync) per call; with
    ``ptcore.set_input_checks(False)`` it skips that read, and an out-of-range index then
    yields a row of NaN instead of an error.
    """
    if dtype is None:
        dtype = out.dtype if out is not None else torch.float32
    if has_native():
        if out is None:
            return torch.ops.ptcore.gather_rows(store, scales, indices, dtype)
        torch.ops.ptcore.gather_rows.out(store, scales, indices, dtype, out=out)
        return out
    return reference.gather_rows(store, scales, indices, dtype, out=out)


def _register() -> None:
    @torch.library.register_fake("ptcore::quantize_rows")
    def _(x):
        torch._check(x.dim() == 2, lambda: f"x must be 2-D, got shape {tuple(x.shape)}")
        return (x.new_empty(x.shape, dtype=torch.int8),
                x.new_empty((x.shape[0],), dtype=torch.float32))

    @torch.library.register_fake("ptcore::gather_rows")
    def _(store, scales, indices, dtype):
        torch._check(store.dim() == 2, lambda: f"store must be 2-D, got {tuple(store.shape)}")
        torch._check(indices.dim() == 1, lambda: f"indices must be 1-D, got {tuple(indices.shape)}")
        return store.new_empty((indices.shape[0], store.shape[1]), dtype=dtype)

    @torch.library.register_fake("ptcore::gather_rows.out")
    def _(store, scales, indices, dtype, *, out):
        shape = (indices.shape[0], store.shape[1])
        torch._check(tuple(out.shape) == shape,
                     lambda: f"out must have shape {list(shape)}, got {list(out.shape)}")
        torch._check(out.dtype == dtype, lambda: f"out must be {dtype} like dtype, got {out.dtype}")


if has_native():
    _register()
