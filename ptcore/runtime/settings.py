"""What a run was made with, and how two runs differ: resume refuses a checkpoint (and the
commands an output folder) whose settings are not the current ones, naming the keys."""
from __future__ import annotations

import hashlib
import json

import torch

__all__ = ["plain", "differences", "renamed_settings", "optimizer_settings", "model_signature"]


def plain(obj):
    """``obj`` as JSON values (tuples become lists, other objects their str), so settings
    compare equal after a round trip through a file."""
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def differences(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every (dotted) key whose value differs."""
    a, b = _flatten(plain(old)), _flatten(plain(new))
    missing = object()
    return [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)]


def renamed_settings(settings: dict, renamed: dict[str, str]) -> dict:
    """``settings`` recorded before options were ``renamed`` (old name -> new), under the new
    names; a record that already uses them is returned as it is. A name may be both old and
    new (incremental's ``classes``): only names that are old alone tell an old record."""
    tells = [old for old in renamed if old not in renamed.values()]
    if not any(old in settings and renamed[old] not in settings for old in tells):
        return settings
    return {renamed.get(k, k): v for k, v in settings.items()}


def optimizer_settings(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's type and the hyperparameters of each group (before any schedule)."""
    groups = {}
    for i, g in enumerate(optimizer.param_groups):
        groups[str(i)] = {k: v for k, v in g.items() if k != "params"}
        groups[str(i)]["params"] = len(g["params"])
    return {"type": type(optimizer).__name__, "groups": groups}


def model_signature(state: dict[str, torch.Tensor]) -> str:
    """Hash of a state_dict's names, dtypes and shapes: the architecture, not the values."""
    text = ";".join(f"{k}:{v.dtype}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
