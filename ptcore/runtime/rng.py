"""The random number generators: their state (torch CPU and CUDA, Python's random), saved
in checkpoints so a resumed run draws exactly what an uninterrupted one would; seeding them
all at the start of a run; and torch's deterministic-algorithms switch for a run."""
from __future__ import annotations

import contextlib
import os
import random

import torch

__all__ = ["get_rng_state", "set_rng_state", "seed_everything", "deterministic_algorithms"]

_CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


def get_rng_state() -> dict:
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": list(internal),
             "python_version": version, "python_gauss": gauss}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed every generator a run draws from before its first random number: torch's (CPU
    and CUDA; a new head's initial weights, dropout), Python's and NumPy's global ones.
    The commands call it first thing; without it two runs of one command start from
    different random heads (docs/reproducibility.md)."""
    import numpy as np

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True):
    """Within the block, torch's deterministic algorithms only (an error where an op has
    none), cuDNN without autotuning, and cuBLAS with a fixed workspace; the previous
    settings come back after it. A no-op when ``enabled`` is false. On the CPU, ptcore's
    runs are bit-identical without it (docs/reproducibility.md); it is for GPUs, where
    atomics in some backward kernels and autotuned convolutions vary from run to run."""
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             os.environ.get(_CUBLAS_WORKSPACE))
    # cuBLAS reads it when a handle is created: set before the run's first matmul.
    os.environ.setdefault(_CUBLAS_WORKSPACE, ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:4]
        if saved[4] is None:
            os.environ.pop(_CUBLAS_WORKSPACE, None)
