"""PNG plots of run results (matplotlib, Agg backend: no display needed).

Every function takes plain Python data (lists, dicts of floats), writes one PNG atomically
to ``path`` and returns the path, so strategies, the demo and user code can all call them.
Accuracies are fractions in [0, 1] and are shown as percentages.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless machines and worker processes
import matplotlib.pyplot as plt  # noqa: E402

from ptcore.runtime.files import atomic_write_bytes  # noqa: E402

__all__ = ["accuracy_heatmap", "accuracy_curve", "learning_curves", "method_comparison",
           "image_grid"]


def _save(fig, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _check_matrix(matrix) -> list[list[float | None]]:
    rows = [list(r) for r in matrix]
    if not rows or any(len(r) != len(rows) for r in rows):
        raise ValueError(f"accuracy matrix must be square and non-empty, got row lengths "
                         f"{[len(r) for r in rows]}")
    return rows


def accuracy_heatmap(matrix: Sequence[Sequence[float | None]], path: str | os.PathLike, *,
                     title: str = "Accuracy per task after each training task",
                     task_labels: Sequence[str] | None = None) -> Path:
    """Heatmap of ``matrix[i][j]`` = accuracy on task j after training task i (T×T).
    Entries above the diagonal (tasks not seen yet) may be None and are left blank."""
    rows = _check_matrix(matrix)
    n = len(rows)
    labels = list(task_labels) if task_labels is not None else [f"task {j}" for j in range(n)]
    if len(labels) != n:
        raise ValueError(f"task_labels has {len(labels)} names for {n} tasks")
    grid = [[float("nan") if v is None else 100.0 * v for v in r] for r in rows]
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.2, 1.0 * n + 1.5))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            if rows[i][j] is not None:
                v = grid[i][j]
                ax.text(j, i, f"{v:.0f}", ha="center", va="center",
                        color="black" if v > 60 else "white", fontsize=9)
    ax.set_xticks(range(n), labels, rotation=30, ha="right")
    ax.set_yticks(range(n), [f"after {lab}" for lab in labels])
    ax.set_xlabel("evaluated on")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    return _save(fig, path)


def accuracy_curve(curves: Mapping[str, Sequence[float]], path: str | os.PathLike, *,
                   title: str = "Accuracy on all classes seen so far",
                   xlabel: str = "after task", ylabel: str = "accuracy (%)") -> Path:
    """One line per method: ``curves[method][t]`` = accuracy after step t (e.g. average
    accuracy over the tasks seen so far after training task t)."""
    if not curves:
        raise ValueError("accuracy_curve needs at least one method")
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ys in curves.items():
        ax.plot(range(len(ys)), [100.0 * y for y in ys], marker="o", label=name)
    longest = max(len(ys) for ys in curves.values())
    ax.set_xticks(range(longest))
    ax.set_ylim(0, 102)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def learning_curves(histories: Mapping[str, Sequence[Mapping[str, float]]],
                    path: str | os.PathLike, *, title: str = "Learning curves",
                    metric: str = "val_accuracy") -> Path:
    """Per-epoch ``metric`` of each method (records as :func:`ptcore.engine.fit` returns
    them; records without the metric are skipped), against cumulative training seconds,
    so the plot shows both how good and how fast."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn = 0
    for name, records in histories.items():
        t, xs, ys = 0.0, [], []
        for r in records:
            t += float(r.get("seconds", 0.0))
            if metric in r:
                xs.append(t)
                ys.append(100.0 * r[metric] if "accuracy" in metric else r[metric])
        if ys:
            ax.plot(xs, ys, marker=".", label=name)
            drawn += 1
    if not drawn:
        plt.close(fig)
        raise ValueError(f"no record in any history has {metric!r}")
    ax.set(xlabel="training time (s)", title=title,
           ylabel=f"{metric} (%)" if "accuracy" in metric else metric)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def method_comparison(groups: Mapping[str, Mapping[str, float]], path: str | os.PathLike, *,
                      title: str = "Methods compared", ylabel: str = "accuracy (%)",
                      times: Mapping[str, Mapping[str, float]] | None = None) -> Path:
    """Bar chart, one panel per group (e.g. a demo stage): ``groups[group][method]`` is an
    accuracy. With ``times`` (same keys, seconds) each bar is annotated with its time."""
    if not groups or not all(groups.values()):
        raise ValueError("method_comparison needs at least one method in every group")
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups) + 0.6, 4),
                             squeeze=False, sharey=True)
    for ax, (group, values) in zip(axes[0], groups.items()):
        names = list(values)
        heights = [100.0 * values[n] for n in names]
        bars = ax.bar(range(len(names)), heights, color=plt.cm.tab10.colors[:len(names)])
        for bar, n, h in zip(bars, names, heights):
            label = f"{h:.1f}"
            if times is not None and n in times.get(group, {}):
                label += f"\n{times[group][n]:.1f}s"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, h), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
        ax.set_title(group)
        ax.set_ylim(0, 112)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    return _save(fig, path)


def image_grid(images, path: str | os.PathLike, *, labels: Sequence[str] | None = None,
               columns: int = 12, title: str = "Samples") -> Path:
    """Grey images ``[N, H, W]`` (values in [0, 1], ink bright) in a grid, each captioned
    with its entry of ``labels``."""
    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(0.75 * columns, 0.85 * rows + 0.4),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if labels is not None:
                ax.set_title(labels[i], fontsize=8, pad=2)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
