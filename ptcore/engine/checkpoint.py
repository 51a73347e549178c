"""Training checkpoints: one file per run state, written atomically, verified when read.

The SHA-256 covers everything in the file, not only the model: optimizer, scheduler,
RNG, history, settings and meta are hashed through a canonical walk (tensors by dtype,
shape and bytes; containers by their items), so a flipped byte anywhere is an error,
never a silently different state. Files are read with :func:`read_torch_file` (no code
runs from a file); under DDP rank 0 reads and broadcasts the bytes (``from_main``), so
ranks on node-local disks agree on what they resume from."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ptcore.runtime import distributed as D
from ptcore.runtime.files import UnreadableFileError, atomic_torch_save, read_torch_file

__all__ = ["FORMAT", "CheckpointError", "state_digest", "payload_digest", "save_checkpoint",
           "load_checkpoint", "is_checkpoint"]

FORMAT = "ptcore.checkpoint"
VERSION = 2  # 1: the digest covered the model tensors only


class CheckpointError(UnreadableFileError):
    """A checkpoint that cannot be trusted or does not belong to this run."""


def _tensor(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"T{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of a state_dict, in key order."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _walk(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        _tensor(h, obj)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for k in sorted(obj, key=repr):
            _walk(h, k)
            _walk(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}|".encode())
        for v in obj:
            _walk(h, v)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.dtype,
                                         torch.device, torch.Size)):
        h.update(f"{type(obj).__name__}:{obj!r}|".encode())
    else:
        raise TypeError(f"checkpoints hold tensors, numbers, strings and containers; got "
                        f"{type(obj).__name__}")


def payload_digest(payload: dict) -> str:
    """SHA-256 of every entry of a checkpoint but the digest itself."""
    h = hashlib.sha256()
    _walk(h, {k: v for k, v in payload.items() if k != "sha256"})
    return h.hexdigest()


def is_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def save_checkpoint(path: str | os.PathLike, model_state: dict, **state) -> Path:
    """Write ``model_state`` (a state_dict) and any other entries (optimizer, scheduler, rng,
    epoch, meta, …) to ``path`` atomically."""
    payload = {"format": FORMAT, "version": VERSION, "model": model_state, **state}
    return atomic_torch_save(dict(payload, sha256=payload_digest(payload)), path)


def _read_bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def load_checkpoint(path: str | os.PathLike, *, from_main: bool = False) -> dict | None:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    ``from_main``: a collective call under torch.distributed; rank 0 reads the file and
    every rank verifies the bytes it broadcasts, and a missing file returns None on every
    rank. Otherwise a missing file raises FileNotFoundError."""
    path = Path(path)
    name = f"checkpoint {str(path)!r}"
    if from_main:
        data = D.on_main(lambda: _read_bytes(path), f"reading {name}")
        if data is None:
            return None
        ckpt = read_torch_file(data, name)
    else:
        ckpt = read_torch_file(path, "checkpoint")
    if not is_checkpoint(ckpt):
        raise CheckpointError(f"{name} is not a ptcore checkpoint")
    version = ckpt.get("version")
    if version == 1:
        ok = state_digest(ckpt["model"]) == ckpt.get("model_sha256")
    elif version == VERSION:
        try:
            ok = payload_digest(ckpt) == ckpt.get("sha256")
        except TypeError:
            ok = False
    else:
        raise CheckpointError(f"{name} has version {version}, this ptcore reads versions 1 "
                              f"and {VERSION}")
    if not ok:
        raise CheckpointError(f"{name} failed verification: its contents do not match their "
                              "recorded SHA-256 (damaged or edited)")
    return ckpt
