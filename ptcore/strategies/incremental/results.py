"""What an incremental run reports: the record of results.json (both protocols' accuracy
matrices with their summaries, the protocol's own on top) and the two plots beside it."""
from __future__ import annotations

from pathlib import Path

from ptcore.strategies.incremental.metrics import summarize

__all__ = ["PROTOCOLS", "run_results", "write_plots"]

PROTOCOLS = ("class", "task")


def run_results(R: dict, **record) -> dict:
    """``record`` (method, protocol, classes, tasks, ...) with ``R``'s accuracy matrix and
    summary per protocol, and the run's own protocol's summary also at the top level."""
    res = dict(record)
    for proto, matrix in R.items():
        res[f"{proto}_incremental"] = {"accuracy_matrix": matrix, **summarize(matrix)}
    res.update(res[f"{record['protocol']}_incremental"])
    return res


def write_plots(folder: Path, results: dict, task_classes: list) -> None:
    """accuracy_matrix.png (the protocol's matrix) and accuracy_curve.png (both protocols'
    mean accuracy over the tasks seen so far) in ``folder``."""
    from ptcore.report import accuracy_curve, accuracy_heatmap

    method, protocol = results["method"], results["protocol"]
    names = [",".join(map(str, cs)) for cs in task_classes]
    accuracy_heatmap(results["accuracy_matrix"], folder / "accuracy_matrix.png",
                     task_labels=names, title=f"{method}, {protocol}-incremental: accuracy on "
                     "each task after each task")
    accuracy_curve({f"{p}-incremental": results[f"{p}_incremental"]["accuracy_after_task"]
                    for p in PROTOCOLS}, folder / "accuracy_curve.png",
                   title=f"{method}: mean accuracy over the tasks seen so far")
