"""Metrics as JSON lines: one record per epoch, appended; on resume the records of epochs
that will be re-run are dropped so the file reads as one uninterrupted run."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ptcore.engine.files import atomic_write_bytes

__all__ = ["MetricsLog", "read_metrics"]


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records in ``path``; a torn last line (a crash mid-write) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class MetricsLog:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def truncate(self, epoch: int) -> None:
        """Keep only the records of epochs before ``epoch``."""
        kept = [r for r in read_metrics(self.path) if r.get("epoch", -1) < epoch]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
