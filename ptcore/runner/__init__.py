"""`ptcore run`'s config runner: stage configs run as method comparisons, with a report.

:func:`run_stages` (pipeline.py) validates every config and prepares every stage
(stages.py: data through the one recipe, models, strategies) before training any, then
writes results.json, report.md and the plots. `ptcore demo` (ptcore/demo/) runs its
presets' configs through it."""
from ptcore.runner.pipeline import run_stages

__all__ = ["run_stages"]
