"""torch.distributed as the engine uses it: set up from torchrun's environment (NCCL on
GPUs, gloo on CPUs), rank/world queries that also work without it, sum-reductions."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["setup", "is_distributed", "rank", "world_size", "is_main", "barrier", "all_sum",
           "default_device"]


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


def setup() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1) unless already in one.
    Returns whether training is distributed."""
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return is_distributed()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over all processes (itself when not distributed)."""
    if is_distributed():
        values = values.clone()
        dist.all_reduce(values)
    return values
