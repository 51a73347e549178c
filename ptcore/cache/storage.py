"""Where cached rows live (GPU memory, host memory, or a memory-mapped file) and how a
batch of them reaches the compute device."""
from __future__ import annotations

import os

import torch

from ptcore.ops import gather_rows, input_checks

__all__ = ["TIERS", "choose_tier", "RowStore"]

TIERS = ("auto", "device", "cpu", "disk")
# "auto" keeps a cache in GPU memory while it takes at most this share of the free GPU
# memory (the rest is for training), in host memory up to this share of the available RAM.
DEVICE_SHARE = 0.25
HOST_SHARE = 0.5


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def choose_tier(storage: str, nbytes: int, device: torch.device, path: str | None) -> str:
    """Resolve ``storage`` ("auto" by size and free memory) and check it can be honoured."""
    if storage not in TIERS:
        raise ValueError(f"storage must be one of {TIERS}, got {storage!r}")
    if storage == "device" and device.type != "cuda":
        raise ValueError(f"storage='device' keeps the cache in GPU memory, but the cache's "
                         f"device is {device}; use storage='cpu' or pass device='cuda'")
    if storage == "disk" and path is None:
        raise ValueError("storage='disk' needs a path to memory-map the cache under")
    if storage != "auto":
        return storage
    if device.type == "cuda" and nbytes <= DEVICE_SHARE * torch.cuda.mem_get_info(device)[0]:
        return "device"
    if nbytes <= HOST_SHARE * _available_ram():
        return "cpu"
    if path is not None:
        return "disk"
    raise MemoryError(f"a {nbytes / 2**30:.1f} GiB cache fits neither in GPU nor host memory; "
                      "pass path=... to keep it on disk")


class RowStore:
    """Rows ``[R, D]`` (int8 codes with float32 scales, or float rows) in one tier."""

    def __init__(self, rows: torch.Tensor, scales: torch.Tensor | None, tier: str,
                 device: torch.device, *, mapped: bool = False):
        self.tier, self.device = tier, device
        pin = device.type == "cuda" and tier == "cpu"
        if tier == "device":
            rows, scales = rows.to(device), None if scales is None else scales.to(device)
        elif tier == "cpu" and (mapped or (pin and not rows.is_pinned())):
            rows = _copy_to_host(rows, pin)
            scales = None if scales is None else _copy_to_host(scales, pin)
        self.rows, self.scales = rows, scales
        # Host → GPU batches: pinned staging buffers for the compact rows (and scales),
        # reused across batches; the side stream that copies them and the event that says
        # the last copy has read them.
        self._staged: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._copy_stream = self._copied = None

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + (0 if self.scales is None else self.scales.nbytes)

    def gather(self, index: torch.Tensor, dtype: torch.dtype,
               device: torch.device | None = None, *,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``index`` (int64, CPU, each in range: the caller checks) as ``dtype`` on
        ``device`` (default: the store's); into ``out`` ([B, D], contiguous) when given."""
        device = self.device if device is None else device
        if self.rows.device.type == device.type:
            return _gather(self.rows, self.scales, index.to(self.rows.device), dtype, out)
        if device.type != "cuda":  # rows on the GPU, a CPU batch wanted
            rows = _gather(self.rows, self.scales, index.to(self.rows.device), dtype, None)
            return rows.cpu() if out is None else out.copy_(rows)
        return self._gather_to_gpu(index, dtype, device, out)

    def _gather_to_gpu(self, index, dtype, device, out):
        # Select the compact rows into pinned memory, copy them on a side stream (so the copy
        # overlaps kernels already queued), dequantize on the GPU: PCIe carries int8/fp16.
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device)
            self._copied = torch.cuda.Event()
        rows, scales = self._staging(index.numel())
        torch.index_select(self.rows, 0, index, out=rows)
        if scales is not None:
            torch.index_select(self.scales, 0, index, out=scales)
        current = torch.cuda.current_stream(device)
        with torch.cuda.stream(self._copy_stream):
            rows = rows.to(device, non_blocking=True)
            scales = None if scales is None else scales.to(device, non_blocking=True)
            self._copied.record()
        current.wait_stream(self._copy_stream)
        for t in (rows, scales):
            if t is not None:
                t.record_stream(current)  # allocated on the side stream, used on this one
        return _gather(rows, scales, torch.arange(rows.shape[0], device=device), dtype, out)

    def _staging(self, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first ``b`` rows of the pinned staging buffers, once the copy that read them
        last has finished (by the time the next batch is selected it normally has); grown
        to the largest batch seen, so a batch neither allocates nor page-faults."""
        self._copied.synchronize()
        if self._staged is None or self._staged[0].shape[0] < b:
            rows = torch.empty((b, self.rows.shape[1]), dtype=self.rows.dtype, pin_memory=True)
            scales = None if self.scales is None else torch.empty(b, pin_memory=True)
            self._staged = rows, scales
        rows, scales = self._staged
        return rows[:b], None if scales is None else scales[:b]


def _gather(rows, scales, index, dtype, out):
    """gather_rows for indices the caller has range-checked on the host: on CUDA without
    the device-side check, whose flag read would sync the stream every batch (for this
    thread only: other threads keep their checks)."""
    if not rows.is_cuda:
        return gather_rows(rows, scales, index, dtype, out=out)
    with input_checks(False):
        return gather_rows(rows, scales, index, dtype, out=out)


def _copy_to_host(t: torch.Tensor, pin: bool) -> torch.Tensor:
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=pin)
    return out.copy_(t)
