"""torch.distributed as the engine uses it: set up from torchrun's environment (NCCL on
GPUs, gloo on CPUs) with an explicit timeout, rank/world queries that also work without
it, sum-reductions, and work done by rank 0 whose outcome (a result or an error) reaches
every rank, so a failure on one rank ends all of them instead of leaving them waiting.

The timeout (``$PTCORE_DDP_TIMEOUT`` seconds, default 600; the commands' ``--ddp-timeout``)
bounds every collective: a rank that dies mid-epoch makes the others fail within it."""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

__all__ = ["setup", "shutdown", "is_distributed", "rank", "world_size", "is_main", "barrier",
           "all_sum", "on_main", "default_device", "resolve_device",
           "available_devices", "timeout_seconds",
           "RankFailedError", "TIMEOUT_ENV"]

TIMEOUT_ENV = "PTCORE_DDP_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


class RankFailedError(RuntimeError):
    """Another rank failed in work whose outcome this rank waited for."""


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def available_devices() -> list[str]:
    """The devices this process can train on, by name (cpu, cuda:N, mps, xpu)."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for kind in ("mps", "xpu"):
        backend = getattr(torch.backends, kind, None) or getattr(torch, kind, None)
        if backend is not None and getattr(backend, "is_available", lambda: False)():
            found.append(kind)
    return found


def resolve_device(device=None) -> torch.device:
    """``device`` (a torch.device or its name, None: :func:`default_device`) checked before
    any work: a name torch does not know, or a device this machine lacks, raises a
    ValueError naming the devices there are (torch itself would fail deep inside the first
    ``.to()``)."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device name (e.g. cpu, cuda, cuda:1); "
                         f"available here: {', '.join(available_devices())}") from None
    if dev.type == "cpu":
        return dev
    available = available_devices()
    if dev.type == "cuda":
        ok = dev.index is None and torch.cuda.is_available() or f"cuda:{dev.index}" in available
    else:
        ok = dev.type in available and not dev.index
    if not ok:
        raise ValueError(f"device {str(device)!r} is not available on this machine; "
                         f"available: {', '.join(available)}")
    return dev


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        raise ValueError(f"${TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def setup() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1) unless already in one.
    Returns whether training is distributed."""
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend,
                                timeout=datetime.timedelta(seconds=timeout_seconds()))
    return is_distributed()


def shutdown() -> None:
    """Leave the process group (every exit path of a command calls this)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # a group broken by a lost peer cannot be torn down cleanly
            pass


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over all processes (itself when not distributed)."""
    if is_distributed():
        values = values.clone()
        dist.all_reduce(values)
    return values


def on_main(fn, what: str):
    """``fn()`` run on rank 0 only; every rank returns its result, or raises: rank 0 its
    own error, the others a RankFailedError naming it. A collective call."""
    if not is_distributed():
        return fn()
    error, result = None, None
    if is_main():
        try:
            result = fn()
        except BaseException as e:  # reported to the other ranks, then re-raised here
            error = e
    box = [None if error is None else f"{type(error).__name__}: {error}", result]
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0] is not None:
        raise RankFailedError(f"rank 0 failed while {what}: {box[0]}")
    return box[1]

