"""Atomic file writes and the one reader of torch files.

Writes: a temp file in the same directory, fsync, os.replace, then an fsync of the
directory, so after a crash or power loss a reader sees the old file or the new one, never
a torn one, and a finished rename survives. A failure anywhere (ENOSPC, EIO) leaves the
target as it was and removes the temp file; temp files a kill left behind are removed by
:func:`remove_stale_temps`.

Reads: :func:`read_torch_file` never executes code from the file: ``.safetensors`` through
safetensors, everything else through ``torch.load(weights_only=True)``, which unpickles
tensors and plain containers only."""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import torch

from ptcore.errors import UserError

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_torch_save", "fsync_dir",
           "remove_stale_temps", "read_torch_file", "UnreadableFileError", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".tmp"


class UnreadableFileError(UserError, ValueError):
    """A file that is not what it should be: truncated, corrupted, foreign or hostile."""


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename or unlink in ``directory`` durable (a no-op where directories cannot
    be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:
            raise type(e)(e.errno, e.strerror, str(path)) from e  # name the file (ENOSPC)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temp files (``.<name>.*.tmp``) an interrupted write left in ``directory``.
    Call it only where no other process is writing (the run's own folder, under its lock)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir()
             if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def read_torch_file(source: str | os.PathLike | bytes, what: str = "file"):
    """The object in a torch file (or its bytes), read without executing code from it.
    ``what`` names the file in errors ("weights file 'w.pt'"). Raises FileNotFoundError or
    :class:`UnreadableFileError`."""
    name = f"{what} {str(source)!r}" if not isinstance(source, bytes) else what
    if not isinstance(source, bytes):
        if not Path(source).is_file():
            raise FileNotFoundError(f"{name} does not exist")
        if str(source).endswith(".safetensors"):
            return _read_safetensors(source, name)
    try:
        data = io.BytesIO(source) if isinstance(source, bytes) else source
        return torch.load(data, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a foreign or hostile pickle: many types
        raise UnreadableFileError(f"{name} is unreadable or corrupt, or not a plain tensor file "
                                  f"(ptcore never runs code from a file): {e}") from e


def _read_safetensors(path, name: str) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise UnreadableFileError(f"{name}: reading .safetensors needs the safetensors "
                                  "package (pip install safetensors)") from e
    try:
        return load_file(os.fspath(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types on bad headers
        raise UnreadableFileError(f"{name} is not a valid safetensors file: {e}") from e
