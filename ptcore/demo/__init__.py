"""`ptcore demo` and `ptcore run`: stage configs run as method comparisons, with a report.

:func:`run_demo` runs a preset's stages (see presets.py); :func:`run_config_files` runs
config files. Both go through :func:`ptcore.demo.pipeline.run_stages`."""
from ptcore.demo.pipeline import run_stages
from ptcore.demo.presets import PRESETS, preset_configs

__all__ = ["PRESETS", "preset_configs", "run_stages"]
