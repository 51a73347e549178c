"""report.md and its plots, made from a results document (see results.py).

:func:`write_report` draws the plots the results allow (learning curves where methods
recorded per-epoch histories, an accuracy heatmap and curve for incremental runs, one
comparison chart) and writes report.md next to them, embedding each by relative path.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from ptcore.runtime.files import atomic_write_bytes
from ptcore.report import plots
from ptcore.report.findings import findings
from ptcore.report.results import STAGES, validate_results
from ptcore.report.tables import markdown_table

__all__ = ["INTROS", "HEADLINE", "seen_accuracy_curve", "make_plots", "render_report",
           "write_report"]

# What each stage is for: context for the reader, the numbers come from the run.
INTROS = {
    "pretrain": "A model trained on the source classes with all their labels (from random "
                "weights, or from the pretrained weights its config names): the model the "
                "later stages adapt or learn from.",
    "finetune": "Adapting the pretrained backbone to a new task with few labels: `scratch` "
                "trains the same architecture from random weights; `linear_probe` trains only "
                "the head, on features of the frozen backbone cached once; `partial` freezes "
                "the early layers; `full` trains everything (smaller learning rates deeper "
                "down).",
    "incremental": "New classes arrive in tasks; after each task the model is tested on "
                   "every task so far. `naive` just keeps training, `lwf` adds a "
                   "distillation loss towards the previous model, `replay` mixes in a small "
                   "memory of old samples, `ewc` penalises moving weights that mattered.",
    "distill": "A teacher trained on all labels is compressed into a smaller student that "
               "has only a few labels plus unlabelled images: `hard_labels` uses the labels "
               "alone; `kd_online` runs the teacher every step; `kd_offline` reads the "
               "teacher's top-k logits from a cache built once.",
}
# The accuracy that the comparison chart shows for each stage.
HEADLINE = {"pretrain": "accuracy", "finetune": "accuracy",
            "incremental": "average_incremental_accuracy", "distill": "accuracy"}


def seen_accuracy_curve(record: dict) -> list[float]:
    """Mean accuracy over the tasks seen so far, after each task: the record's
    ``accuracy_after_task`` (as ptcore.strategies.Incremental reports it) when it has one,
    else computed from its accuracy matrix."""
    if "accuracy_after_task" in record:
        return list(record["accuracy_after_task"])
    return [sum(row[:i + 1]) / (i + 1) for i, row in enumerate(record["accuracy_matrix"])]


def make_plots(results: dict, out_dir: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """Draw every plot the results allow into ``out_dir``; returns, per stage (and
    "summary"), the (caption, file name) of each plot."""
    out = Path(out_dir)
    made: dict[str, list[tuple[str, str]]] = {}
    stages = [s for s in STAGES if s in results]

    def add(stage, caption, path):
        made.setdefault(stage, []).append((caption, Path(path).name))

    for stage in stages:
        methods = results[stage]
        histories = {m: r["history"] for m, r in methods.items() if r.get("history")}
        if any("val_accuracy" in e for h in histories.values() for e in h):
            add(stage, "Validation accuracy against training time",
                plots.learning_curves(histories, out / f"{stage}_learning_curves.png",
                                      title=f"{stage}: learning curves"))
    if "incremental" in results:
        methods = results["incremental"]
        add("incremental", "Accuracy on all classes seen so far, after each task",
            plots.accuracy_curve({m: seen_accuracy_curve(r) for m, r in methods.items()},
                                 out / "incremental_accuracy_curve.png"))
        for m, r in methods.items():
            add("incremental", f"`{m}`: accuracy on each task (columns) after each task (rows)",
                plots.accuracy_heatmap(r["accuracy_matrix"], out / f"incremental_heatmap_{m}.png",
                                       title=f"{m}: accuracy per task",
                                       task_labels=r.get("task_names")))
    groups = {s: {m: r[HEADLINE[s]] for m, r in results[s].items()} for s in stages}
    times = {s: {m: r["train_seconds"] for m, r in results[s].items()} for s in stages}
    add("summary", "Accuracy of every method (incremental: average incremental accuracy), "
        "with training time",
        plots.method_comparison(groups, out / "comparison.png", times=times,
                                title="ptcore: methods compared on this run"))
    return made


def _context_line(context: dict) -> str:
    """Stage facts (sample counts, the teacher's accuracy, stage time) on one line."""
    def fmt(key, v):
        if "accuracy" in key:
            return f"{100 * v:.1f}%"
        return f"{v:.1f}s" if key == "seconds" else f"{v:,}" if isinstance(v, int) else str(v)

    return " · ".join(f"{k.replace('_', ' ')}: {fmt(k, v)}" for k, v in context.items())


def _figures(entries: list[tuple[str, str]]) -> list[str]:
    return [f"![{caption}]({name})\n\n*{caption}*\n" for caption, name in entries]


def _sources(sources: list[dict]) -> list[str]:
    """Where the pretrained weights came from (their provenance records)."""
    if not sources:
        return []
    lines = ["## pretrained weights", ""]
    for s in sources:
        src = s["source"]
        lines += [f"- `{s['weights']}` ({', '.join(s['used_by'])}): {s['model']} trained by "
                  f"ptcore {s['ptcore']} for {s['epochs']} epochs on `{src['dataset']}` "
                  f"({src['size']:,} images, {src['classes']} classes, {src['image_size']}px; "
                  f"seed {s['seed']}), {100 * s['source_accuracy']:.1f}% on its "
                  f"{src['test_samples']:,} test images; SHA-256 `{s['sha256'][:16]}…` "
                  "verified against its provenance record"]
    lines.append("")
    for name in dict.fromkeys(s["samples"] for s in sources if s.get("samples")):
        lines += _figures([("Samples of the pretraining source", name)])
    return lines


def render_report(results: dict, figures: dict[str, list[tuple[str, str]]]) -> str:
    """report.md text: what was run, the findings, a table and the plots per stage."""
    env = results["environment"]
    lines = ["# ptcore run report", ""]
    if results.get("command"):
        lines += [f"Command: `{results['command']}`", ""]
    lines += [f"- seed {results['seed']}, total wall time {results['wall_seconds']:.1f}s",
              f"- ptcore {env.get('ptcore', '?')} (native ops: {env.get('native_loaded', '?')}), "
              f"torch {env.get('torch', '?')}, Python {env.get('python', '?')}, "
              f"device {results.get('device', 'cpu')}", ""]
    lines += _figures(figures.get("summary", []))
    lines += _sources(results.get("weights_sources", []))
    for stage in (s for s in STAGES if s in results):
        methods = results[stage]
        lines += [f"## {stage}", "", INTROS[stage], ""]
        if results.get("context", {}).get(stage):
            lines += [_context_line(results["context"][stage]), ""]
        lines += [markdown_table(stage, methods), ""]
        lines += [f"- {f}" for f in findings(stage, methods)] + [""]
        lines += _figures(figures.get(stage, []))
        config = results.get("configs", {}).get(stage)
        if config is not None:
            lines += ["<details><summary>configuration of this stage</summary>", "",
                      "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```",
                      "", "</details>", ""]
    return "\n".join(lines)


def write_report(results: dict, out_dir: str | os.PathLike) -> Path:
    """Plots and report.md into ``out_dir``; returns the report's path."""
    validate_results(results)
    text = render_report(results, make_plots(results, out_dir))
    return atomic_write_bytes(Path(out_dir) / "report.md", text.encode())
