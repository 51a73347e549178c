"""The per-stage results tables, shared by the terminal summary and report.md."""
from __future__ import annotations

__all__ = ["COLUMNS", "table_rows", "markdown_table", "text_table"]


def _pct(v) -> str:
    return f"{100.0 * v:.1f}%"


def _points(v) -> str:
    return f"{100.0 * v:+.1f} pts"


def _secs(v) -> str:
    return f"{v:.2f}s"


# stage -> (header, metric key, formatter); a column is shown when some method has the key.
COLUMNS = {
    "pretrain": [("accuracy", "accuracy", _pct), ("train time", "train_seconds", _secs),
                 ("epochs", "epochs", str)],
    "finetune": [("accuracy", "accuracy", _pct), ("train time", "train_seconds", _secs),
                 ("time / epoch", "epoch_seconds", _secs),
                 ("uncached time / epoch", "uncached_epoch_seconds", _secs),
                 ("epochs", "epochs", str), ("trainable params", "trainable_params",
                                             lambda v: f"{v:,}")],
    "incremental": [("avg incremental acc", "average_incremental_accuracy", _pct),
                    ("final acc", "final_accuracy", _pct),
                    ("forgetting", "forgetting", _points),
                    ("train time", "train_seconds", _secs)],
    "distill": [("accuracy", "accuracy", _pct), ("train time", "train_seconds", _secs),
                ("teacher time", "teacher_seconds", _secs)],
}


def table_rows(stage: str, methods: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) for one stage's method records; missing or null values show as "–"."""
    cols = [c for c in COLUMNS[stage] if any(c[1] in r for r in methods.values())]
    header = ["method"] + [c[0] for c in cols]
    rows = [[name] + [fmt(rec[key]) if rec.get(key) is not None else "–" for _, key, fmt in cols]
            for name, rec in methods.items()]
    return header, rows


def markdown_table(stage: str, methods: dict) -> str:
    header, rows = table_rows(stage, methods)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _aligned(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths)))


def text_table(stage: str, methods: dict) -> str:
    header, rows = table_rows(stage, methods)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    return "\n".join(_aligned(r, widths) for r in [header, *rows])
