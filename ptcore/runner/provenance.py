"""Where a pretrained weights file came from: ``provenance.json`` beside every model the
pretrain stage saves (the stage config, seed, source dataset and its size, the accuracy
reached on it, the file's SHA-256 and the ptcore version), and its verification when the
file is used, so that weights that ship with ptcore can be traced to the command that
made them and checked byte for byte."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["PROVENANCE", "sha256_file", "write_provenance", "read_provenance"]

PROVENANCE = "provenance.json"
_FORMAT = "ptcore.provenance"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_provenance(weights: str | os.PathLike, cfg: dict, method: str, record: dict,
                     context: dict, *, image_size: int) -> Path:
    """``provenance.json`` beside ``weights``, which the pretrain stage's ``method`` of
    ``cfg`` has just written with ``record`` (its results) and ``context`` (stage facts),
    from images of ``image_size`` pixels a side (what its data was read at, which
    ``cfg``'s ``data.image_size`` may leave unset)."""
    import torch

    from ptcore._version import __version__
    from ptcore.runtime.files import atomic_write_json

    weights = Path(weights)
    doc = {
        "format": _FORMAT, "version": 1, "file": weights.name,
        "sha256": sha256_file(weights), "bytes": weights.stat().st_size,
        "model": cfg["methods"][method].get("model", cfg["model"]["name"]),
        "method": method, "seed": cfg["seed"],
        "source": {"dataset": context.get("dataset", cfg["data"]["dataset"]),
                   "size": context.get("dataset_size"), "classes": context.get("classes"),
                   "image_size": image_size,
                   "train_samples": context.get("train_samples"),
                   "test_samples": context.get("test_samples")},
        "source_accuracy": record["accuracy"], "epochs": record["epochs"],
        "train_seconds": record["train_seconds"],
        "ptcore": __version__, "torch": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg,
    }
    return atomic_write_json(weights.parent / PROVENANCE, doc)


def read_provenance(weights: str | os.PathLike, *, verify: bool = True) -> dict:
    """The provenance record beside ``weights``; with ``verify``, a ValueError unless the
    file's SHA-256 is the one recorded."""
    weights = Path(weights)
    path = weights.parent / PROVENANCE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"no readable provenance record {str(path)!r}: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("file") != weights.name:
        raise ValueError(f"{str(path)!r} is not the provenance record of {weights.name}")
    if verify and sha256_file(weights) != doc["sha256"]:
        raise ValueError(f"{str(weights)!r} does not match its provenance record (SHA-256 "
                         f"differs): the file was changed or damaged")
    return doc
