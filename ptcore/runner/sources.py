"""Where a run's pretrained weights came from, for results.json and the report: every local
weights file a config loads that has a provenance record (verified), and a grid of
samples of its source dataset when ptcore can draw them (the glyphs)."""
from __future__ import annotations

import os
from pathlib import Path

from ptcore.runner.provenance import PROVENANCE, read_provenance

__all__ = ["weights_sources", "glyph_grid"]

GRID = "source_samples.png"


def _weights_files(cfg: dict):
    sections = [("model", cfg["model"]), ("teacher", cfg.get("teacher"))]
    sections += [(f"methods.{n}", o) for n, o in cfg["methods"].items()]
    for where, section in sections:
        w = (section or {}).get("weights")
        if w and Path(w).is_file() and (Path(w).parent / PROVENANCE).is_file():
            yield where, w


def glyph_grid(path: str | os.PathLike, *, n: int = 48, seed: int = 0) -> Path:
    """``n`` glyph samples of ``n`` different characters, as the network sees them before
    resizing (8×8, 17 grey levels), captioned with their characters."""
    import torch

    from ptcore.data.glyphs import GlyphsDataset, glyph_characters
    from ptcore.report.plots import image_grid

    chars = glyph_characters()
    pick = torch.randperm(len(chars), generator=torch.Generator().manual_seed(seed))[:n]
    data = GlyphsDataset(n, 8, seed=seed, characters=[chars[i] for i in sorted(pick.tolist())])
    return image_grid(data.images[:, 0], path, labels=[data.classes[y] for y in data.targets],
                      title=f"GlyphsDataset samples ({len(chars)} characters, fonts "
                      "bundled with matplotlib)")


def weights_sources(cfgs: list[dict], out: str | os.PathLike, *,
                    produced: set[str] = frozenset()) -> list[dict]:
    """One entry per pretrained weights file the configs load (files that this run makes,
    ``produced``, aside): its provenance, which config keys use it and, for glyph-pretrained
    weights, ``samples``: a grid drawn into ``out``. Raises ValueError if a file does not
    match its provenance record."""
    found: dict[str, dict] = {}
    for cfg in cfgs:
        for where, w in _weights_files(cfg):
            if str(Path(w)) in produced:
                continue
            if w not in found:
                doc = read_provenance(w)
                found[w] = {"weights": w, "model": doc["model"], "source": doc["source"],
                            "source_accuracy": doc["source_accuracy"], "epochs": doc["epochs"],
                            "sha256": doc["sha256"], "ptcore": doc["ptcore"],
                            "seed": doc["seed"], "used_by": []}
            found[w]["used_by"].append(f"{cfg['stage']}.{where}")
    sources = list(found.values())
    glyphs = [s for s in sources if s["source"]["dataset"] == "glyphs"]
    if glyphs:
        glyph_grid(Path(out) / GRID)
        for s in glyphs:
            s["samples"] = GRID
    return sources
