"""Pretrained weights: torchvision weights by name, or a local state_dict / ptcore checkpoint
(.pt/.pth/.bin or .safetensors). Every file, the torch hub cache's included, is read through
ptcore.runtime.files.read_torch_file, which never executes code from a file: torch's own
``load_state_dict_from_url`` unpickles the cached file with ``weights_only=False``."""
from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch
import torch.nn as nn

from ptcore.errors import UserError

__all__ = ["load_weights", "read_state_dict", "WeightsUnavailableError"]


class WeightsUnavailableError(UserError, RuntimeError):
    """Named weights that are neither in the hub cache nor downloadable."""


class WeightsMismatchError(UserError, ValueError):
    """Weights made for another architecture."""


def _is_path(weights) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (os.sep in weights or "/" in weights
                                         or weights.endswith((".pt", ".pth", ".bin"))
                                         or os.path.exists(weights))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model tensors in ``path``: a plain state_dict or a ptcore checkpoint (verified)."""
    from ptcore.engine.checkpoint import is_checkpoint, load_checkpoint
    from ptcore.runtime.files import UnreadableFileError, read_torch_file

    obj = read_torch_file(path, "weights file")
    if is_checkpoint(obj):
        obj = load_checkpoint(path)["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UnreadableFileError(f"weights file {str(path)!r} holds neither a state_dict nor "
                                  "a ptcore checkpoint")
    # A state_dict saved from a DDP-wrapped model carries a "module." prefix.
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _torchvision_state_dict(name: str, weights: str, progress: bool) -> dict:
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    if weights not in enum.__members__:
        raise ValueError(f"unknown weights {weights!r} for {name}; choose one of "
                         f"{', '.join(enum.__members__)} or give the path of a local file")
    w = enum[weights]
    target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
    if not target.is_file():
        # torch.hub checks the hash prefix in the file name as it downloads.
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix = torch.hub.HASH_REGEX.search(target.name)
        try:
            torch.hub.download_url_to_file(w.url, str(target), prefix.group(1) if prefix else None,
                                           progress=progress)
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            raise WeightsUnavailableError(
                f"could not get torchvision weights {name}/{weights} ({e}). Offline? Download "
                f"{w.url} on a connected machine and put it at {target}, or pass weights=PATH "
                "to a local state_dict or ptcore checkpoint file") from e
    return read_state_dict(target)


def load_weights(model: nn.Module, name: str, weights, *, progress: bool = True) -> nn.Module:
    """Load ``weights`` (torchvision name or local path) into ``model`` in place.

    The head takes the size it has in the weights; everything must match otherwise
    (a strict load), so a wrong architecture is an error, not a silent partial load.
    """
    from ptcore.models.heads import get_head, head_path, head_width, replace_head

    if _is_path(weights):
        state = read_state_dict(weights)
    elif isinstance(weights, str):
        state = _torchvision_state_dict(name, weights, progress)
    else:
        raise TypeError(f"weights must be a torchvision weights name or a path, got "
                        f"{type(weights).__name__}")
    key = head_path(model) + ".weight"
    if key not in state:
        raise WeightsMismatchError(f"weights for {name} lack the head tensor {key!r}: wrong "
                                   "model?")
    if state[key].shape[0] != head_width(get_head(model)):
        replace_head(model, int(state[key].shape[0]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsMismatchError(f"weights {weights!r} do not fit {name}: {e}") from e
    return model
