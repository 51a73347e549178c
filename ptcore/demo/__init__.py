"""`ptcore demo`: a preset's stage configs (presets.py), with the backbones they start from
(backbones.py), run by the config runner (:func:`ptcore.runner.run_stages`)."""
from ptcore.demo.presets import PRESETS, preset_configs

__all__ = ["PRESETS", "preset_configs"]
