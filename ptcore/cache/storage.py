"""Where cached rows live (GPU memory, host memory, or a memory-mapped file) and how a
batch of them reaches the compute device."""
from __future__ import annotations

import os

import torch

from ptcore.ops import gather_rows

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
        self._copy_stream = None

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + (0 if self.scales is None else self.scales.nbytes)

    def gather(self, index: torch.Tensor, dtype: torch.dtype,
               device: torch.device | None = None) -> torch.Tensor:
        """Rows ``index`` (int64, CPU) as ``dtype`` on ``device`` (default: the store's)."""
        device = self.device if device is None else device
        if self.rows.device.type == device.type:
            return gather_rows(self.rows, self.scales, index.to(self.rows.device), dtype)
        if device.type != "cuda":  # rows on the GPU, a CPU batch wanted
            return gather_rows(self.rows, self.scales, index.to(self.rows.device), dtype).to(device)
        return self._gather_to_gpu(index, dtype, device)

    def _gather_to_gpu(self, index, dtype, device):
        # Select the compact rows into pinned memory, copy them on a side stream (so the copy
        # overlaps kernels already queued), dequantize on the GPU: PCIe carries int8/fp16.
        b = index.numel()
        rows = torch.empty((b, self.rows.shape[1]), dtype=self.rows.dtype, pin_memory=True)
        torch.index_select(self.rows, 0, index, out=rows)
        scales = None
        if self.scales is not None:
            scales = torch.empty((b,), dtype=torch.float32, pin_memory=True)
            torch.index_select(self.scales, 0, index, out=scales)
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device)
        current = torch.cuda.current_stream(device)
        with torch.cuda.stream(self._copy_stream):
            rows = rows.to(device, non_blocking=True)
            scales = None if scales is None else scales.to(device, non_blocking=True)
        current.wait_stream(self._copy_stream)
        for t in (rows, scales):
            if t is not None:
                t.record_stream(current)  # allocated on the side stream, used on this one
        return gather_rows(rows, scales, torch.arange(b, device=device), dtype)


def _copy_to_host(t: torch.Tensor, pin: bool) -> torch.Tensor:
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=pin)
    return out.copy_(t)
