"""`ptcore demo` and `ptcore run`: stage configs run as method comparisons, with a report.

:func:`ptcore.demo.demo.run_demo` runs a preset's stages (presets.py); `ptcore run` runs
config files; both go through :func:`run_stages` (pipeline.py), which prepares every stage
(stages.py) before training any."""
from ptcore.demo.pipeline import run_stages
from ptcore.demo.presets import PRESETS, preset_configs

__all__ = ["PRESETS", "preset_configs", "run_stages"]
