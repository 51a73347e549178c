"""Continual-learning metrics of an accuracy matrix R, where R[t][k] is the accuracy on
task k after learning task t (k <= t; entries above the diagonal are None)."""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["accuracy_after", "summarize"]


def _check(R: Sequence[Sequence[float | None]]) -> list[list[float | None]]:
    rows = [list(r) for r in R]
    if not rows or any(len(r) != len(rows) for r in rows):
        raise ValueError(f"accuracy matrix must be square and non-empty, got row lengths "
                         f"{[len(r) for r in rows]}")
    if any(r[k] is None for t, r in enumerate(rows) for k in range(t + 1)):
        raise ValueError("accuracy matrix needs every entry on and below the diagonal")
    return rows


def accuracy_after(R) -> list[float]:
    """Mean accuracy over the tasks seen so far, after each task (tasks weigh equally)."""
    rows = _check(R)
    return [sum(r[: t + 1]) / (t + 1) for t, r in enumerate(rows)]


def summarize(R) -> dict:
    """average_incremental_accuracy (iCaRL: mean of :func:`accuracy_after`), final_accuracy,
    forgetting (Chaudhry et al. 2018: best accuracy a task had before the last step minus its
    final accuracy, averaged over the old tasks) and backward_transfer (GEM: final minus
    just-learned accuracy, averaged over the old tasks). With one task the last two are None."""
    rows = _check(R)
    T = len(rows)
    after = accuracy_after(rows)
    old = range(T - 1)
    return {
        "accuracy_after_task": after,
        "average_incremental_accuracy": sum(after) / T,
        "final_accuracy": after[-1],
        "forgetting": (sum(max(rows[t][k] for t in range(k, T - 1)) - rows[-1][k] for k in old)
                       / (T - 1)) if T > 1 else None,
        "backward_transfer": (sum(rows[-1][k] - rows[k][k] for k in old) / (T - 1))
        if T > 1 else None,
    }
