"""Run stage configs in order and write results.json, report.md and the plots.

All configs are validated and every stage prepared (data split, models and strategies
built) before the first one trains, so a mistake in the last stage costs seconds, not the
whole run.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

from ptcore.config import validate_config
from ptcore.runtime.run_folder import RESULTS
from ptcore.runner.progress import plain_progress
from ptcore.runner.sources import weights_sources
from ptcore.runner.stages import prepare, pretrained_path

__all__ = ["run_stages", "without_progress"]


def _say(msg: str) -> None:
    print(msg, flush=True)


def _method_line(stage: str, name: str, record: dict) -> str:
    from ptcore.report.markdown import HEADLINE

    key = HEADLINE[stage]
    return (f"  {stage}/{name}: {key.replace('_', ' ')} {100 * record[key]:.1f}% "
            f"in {record['train_seconds']:.1f}s")


def without_progress(configs: list[dict]) -> list[dict]:
    """``configs`` with progress bars off in every stage."""
    return [{**c, "engine": {**(c.get("engine") or {}), "progress": False}} for c in configs]


def run_stages(configs: list[dict], out: str | os.PathLike, *, command: str = "",
               sources: list[str] | None = None, progress: bool = True) -> dict:
    """Run validated-or-raw stage ``configs`` in order; write results.json, report.md and
    the plots to ``out``; return the results document. Stages of the same kind must not
    repeat (results.json holds one entry per stage). ``progress``: False turns every
    progress bar off; otherwise, on a stderr that is not a terminal, progress comes as a
    plain line every few seconds."""
    if not progress:
        configs = without_progress(configs)
    with plain_progress():
        return _run(configs, Path(out), command, sources)


def _run(configs: list[dict], out: Path, command: str, sources: list[str] | None) -> dict:
    from ptcore import info
    from ptcore.report import text_table, write_report, write_results

    started = time.perf_counter()
    cfgs = [validate_config(c, source=s) for c, s in
            zip(configs, sources or [f"config {i}" for i in range(len(configs))])]
    stages = [c["stage"] for c in cfgs]
    if len(set(stages)) != len(stages):
        raise ValueError(f"each stage may appear once in a run, got {stages}")
    produced: set[str] = set()
    prepared = []
    for cfg in cfgs:
        stage = cfg["stage"]
        prepared.append(prepare(cfg, produced=produced,
                                on_method=lambda name, rec, s=stage: _say(_method_line(s, name, rec))))
        if stage == "pretrain":
            produced.update(str(pretrained_path(cfg, m)) for m in cfg["methods"])
    results = {"format": "ptcore.results", "version": 1, "seed": cfgs[0]["seed"],
               "command": command, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "environment": info(), "configs": {}, "context": {},
               "weights_sources": weights_sources(cfgs, out, produced=produced)}
    for p in prepared:
        stage = p.cfg["stage"]
        _say(f"== {stage}: {', '.join(p.cfg['methods'])}")
        t0 = time.perf_counter()
        results[stage] = p.run()
        results["configs"][stage] = p.cfg
        results["context"][stage] = {**p.context, "seconds": time.perf_counter() - t0}
        _say(text_table(stage, results[stage]))
    results["wall_seconds"] = time.perf_counter() - started
    write_results(out / RESULTS, results)
    report = write_report(results, out)
    _say(f"done in {results['wall_seconds']:.1f}s: {out / RESULTS}, {report}")
    return results
