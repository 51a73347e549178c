"""The random number generators' state (torch CPU and CUDA, Python's random), saved in
checkpoints so a resumed run draws exactly what an uninterrupted one would."""
from __future__ import annotations

import random

import torch

__all__ = ["get_rng_state", "set_rng_state"]


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
