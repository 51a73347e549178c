"""Metrics as JSON lines: one record per epoch, appended before the epoch's checkpoint; on
resume the file is rewritten from the checkpoint's history, so it reads as one uninterrupted
run whatever a kill interrupted (a line without its checkpoint is dropped, and no epoch
whose checkpoint landed is ever missing)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ptcore.runtime.files import atomic_write_bytes

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

    def rewrite(self, records: list[dict]) -> None:
        """Replace the file by ``records`` (the checkpoint's history; [] for a new run)."""
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in records).encode())

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
