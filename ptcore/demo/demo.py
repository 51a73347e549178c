"""`ptcore demo`: a preset's stages, with each stage's config written beside the report so
that any stage can be rerun or edited (`ptcore run OUT/configs/<stage>.yaml`)."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from ptcore.demo.backbones import ensure_backbone
from ptcore.runner.pipeline import run_stages, without_progress
from ptcore.demo.presets import preset_backbones, preset_configs
from ptcore.runner.progress import plain_progress
from ptcore.runtime.files import atomic_write_bytes

__all__ = ["run_demo", "write_configs"]


def write_configs(configs: list[dict], directory: str | os.PathLike) -> list[Path]:
    """Each config as ``<stage>.yaml`` in ``directory``."""
    return [atomic_write_bytes(Path(directory) / f"{c['stage']}.yaml",
                               yaml.safe_dump(c, sort_keys=False, default_flow_style=None).encode()) for c in configs]


def run_demo(out: str | os.PathLike = "runs/demo", *, preset: str = "quick", seed: int = 0,
             scale: float = 1.0, progress: bool = True) -> dict:
    """Run ``preset`` into ``out``; returns the results document (also results.json).
    Glyph-pretrained backbones that do not ship are built first (once, then cached)."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} is a file, not a folder")
    configs = preset_configs(preset, str(out), seed=seed, scale=scale)
    if not progress:
        configs = without_progress(configs)
    for arch, image_size in preset_backbones(preset):
        with plain_progress():
            ensure_backbone(arch, image_size, progress=progress)
    paths = write_configs(configs, out / "configs")
    command = f"ptcore demo --out {out} --preset {preset} --seed {seed}"
    if scale != 1.0:
        command += f" --scale {scale}"
    return run_stages(configs, out, command=command, sources=[str(p) for p in paths],
                      progress=progress)
