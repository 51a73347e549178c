"""results.json: what a run measured, in one validated document.

Layout (see docs/demo.md)::

    {"format": "ptcore.results", "version": 1,
     "seed": int, "wall_seconds": float, "environment": ptcore.info(), ...,
     "<stage>": {"<method>": {<metrics>}, ...}, ...}

Stages are "pretrain", "finetune", "incremental" and "distill"; a run holds one or more.
Every method record has ``train_seconds``; the metrics each stage requires are listed in
``STAGE_METRICS``. Accuracies are fractions in [0, 1]. Extra keys are allowed (histories,
settings), so stages can record more without a schema change.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ptcore.runtime.files import atomic_write_json

__all__ = ["FORMAT", "VERSION", "STAGES", "STAGE_METRICS", "validate_results",
           "write_results", "read_results"]

FORMAT = "ptcore.results"
VERSION = 1
STAGES = ("pretrain", "finetune", "incremental", "distill")
STAGE_METRICS = {
    "pretrain": ("accuracy",),
    "finetune": ("accuracy",),
    "incremental": ("average_incremental_accuracy", "final_accuracy", "forgetting",
                    "accuracy_matrix"),
    "distill": ("accuracy",),
}
# Metrics that are fractions; forgetting is a difference of accuracies, so it lies in [-1, 1].
_FRACTIONS = ("accuracy", "average_incremental_accuracy", "final_accuracy")


def _number(value, where: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{where} must be in [{low}, {high}], got {value!r}")


def _matrix(value, where: str) -> None:
    """T×T, lower triangle (tasks seen) numbers in [0, 1]; above it numbers or None."""
    if not isinstance(value, list) or not value or any(
            not isinstance(r, list) or len(r) != len(value) for r in value):
        raise ValueError(f"{where} must be a non-empty square list of lists")
    for i, row in enumerate(value):
        for j, v in enumerate(row):
            if v is not None or j <= i:
                _number(v, f"{where}[{i}][{j}]", 0.0, 1.0)


def _method(record, where: str, stage: str) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be an object, got {type(record).__name__}")
    for key in (*STAGE_METRICS[stage], "train_seconds"):
        if key not in record:
            raise ValueError(f"{where} lacks {key!r}")
    for key in _FRACTIONS:
        if key in record:
            _number(record[key], f"{where}.{key}", 0.0, 1.0)
    if record.get("forgetting") is not None:  # None: one task, nothing to forget
        _number(record["forgetting"], f"{where}.forgetting", -1.0, 1.0)
    if "accuracy_matrix" in record:
        _matrix(record["accuracy_matrix"], f"{where}.accuracy_matrix")
    _number(record["train_seconds"], f"{where}.train_seconds", 0.0, math.inf)


def validate_results(results: dict) -> dict:
    """Raise ValueError naming the first bad entry (by its JSON path); return ``results``."""
    if not isinstance(results, dict):
        raise ValueError(f"results must be an object, got {type(results).__name__}")
    if results.get("format") != FORMAT or results.get("version") != VERSION:
        raise ValueError(f"results must have format {FORMAT!r} version {VERSION}, got "
                         f"{results.get('format')!r} version {results.get('version')!r}")
    for key in ("seed", "wall_seconds", "environment"):
        if key not in results:
            raise ValueError(f"results lack {key!r}")
    if not isinstance(results["environment"], dict):
        raise ValueError("results.environment must be an object (ptcore.info())")
    _number(results["wall_seconds"], "results.wall_seconds", 0.0, math.inf)
    present = [s for s in STAGES if s in results]
    if not present:
        raise ValueError(f"results hold no stage; expected one of {STAGES}")
    for stage in present:
        methods = results[stage]
        if not isinstance(methods, dict) or not methods:
            raise ValueError(f"results.{stage} must be a non-empty object of methods")
        for name, record in methods.items():
            _method(record, f"results.{stage}.{name}", stage)
    return results


def write_results(path: str | os.PathLike, results: dict) -> Path:
    """Validate, then write atomically (a failed validation leaves any old file intact)."""
    return atomic_write_json(path, validate_results(results))


def read_results(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON: {e}") from e
    return validate_results(data)
