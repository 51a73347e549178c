"""Training checkpoints: one file per run state, written atomically, verified when read
(format marker, version, and a SHA-256 of the model tensors)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ptcore.engine.files import atomic_torch_save

__all__ = ["FORMAT", "state_digest", "save_checkpoint", "load_checkpoint", "is_checkpoint"]

FORMAT = "ptcore.checkpoint"
VERSION = 1


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of a state_dict, in key order."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def is_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def save_checkpoint(path: str | os.PathLike, model_state: dict, **state) -> Path:
    """Write ``model_state`` (a state_dict) and any other entries (optimizer, scheduler, rng,
    epoch, meta, …) to ``path`` atomically."""
    return atomic_torch_save({"format": FORMAT, "version": VERSION, "model": model_state,
                              "model_sha256": state_digest(model_state), **state}, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read and verify a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated zip, a foreign pickle: many exception types
        raise ValueError(f"checkpoint {str(path)!r} is unreadable or corrupt: {e}") from e
    if not is_checkpoint(ckpt):
        raise ValueError(f"{str(path)!r} is not a ptcore checkpoint")
    if ckpt.get("version") != VERSION:
        raise ValueError(f"checkpoint {str(path)!r} has version {ckpt.get('version')}, "
                         f"this ptcore reads version {VERSION}")
    if state_digest(ckpt["model"]) != ckpt.get("model_sha256"):
        raise ValueError(f"checkpoint {str(path)!r} failed verification: model tensors do not "
                         "match their recorded SHA-256")
    return ckpt
