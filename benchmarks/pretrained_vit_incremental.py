"""The methods for pretrained models on a ViT pretrained on other data: a small timm
VisionTransformer (16×16 images, 4×4 patches, dim 64, 4 blocks, 4 heads, ~230k parameters)
trained on ptcore's glyphs (GlyphsDataset: characters of many scripts, no digits), then
the digits protocol of the tests (5 tasks of 2 classes, class-incremental, 30 training
images per class) from that backbone with a new head: the head alone fine-tuned, SimpleCIL,
RanPAC, APER and L2P. Prints each run's average incremental accuracy, final accuracy,
forgetting, wall time and final rows of both accuracy matrices, then a Markdown table of
the means (docs/incremental.md). The backbone is pretrained once (seeded) into a cache file
and reused; the seeds vary the digit split, the heads and the prompts.

    PYTHONPATH=$PWD python benchmarks/pretrained_vit_incremental.py [--seeds 0 1 2]
        [--methods ...] [--cache FILE]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from methods_incremental import KEYS, table  # noqa: E402  (which also puts the tests'
from test_incremental_helpers import scenario  # noqa: E402  helpers on the path)

from ptcore import engine  # noqa: E402
from ptcore.data import GlyphsDataset, train_val_test_split  # noqa: E402
from ptcore.strategies import Incremental  # noqa: E402

# The ViT and its pretraining: batch 64, AdamW, cosine with a 5% warm-up, 5% of the glyphs
# held out to measure the backbone (chance: 1 in 382 characters).
ARCH = {"img_size": 16, "patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4,
        "mlp_ratio": 4.0}
RECIPE = {"glyphs": 30000, "image_size": 16, "val": 0.05, "epochs": 20, "batch_size": 64,
          "lr": 1e-3, "weight_decay": 0.05, "warmup": 0.05, "seed": 0}

# name -> (method, extra Incremental arguments); every run: 4 epochs a task, batch 16,
# lr 3e-3 (L2P also at its paper's 3e-2), memory 100 where a method keeps one
METHODS = {
    "naive, head only": ("naive", {"freeze": "head_drop"}),
    "simplecil": ("simplecil", {}),
    "ranpac": ("ranpac", {}),
    "aper": ("aper", {}),
    "aper (bn)": ("aper", {"aper_adapt": "bn"}),
    "l2p": ("l2p", {"lr": 3e-2}),
    "l2p, lr 3e-3": ("l2p", {}),
}


def vit(num_classes: int, seed: int = 0) -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(num_classes=num_classes, **ARCH)


def cache_path(recipe: dict) -> Path:
    """$PTCORE_HOME/backbones/vit-glyphs-<digest of ARCH and the recipe>.pt."""
    from ptcore.demo.backbones import cache_root

    key = json.dumps({"arch": ARCH, **recipe}, sort_keys=True)
    return cache_root() / f"vit-glyphs-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def pretrained_vit(path: str | Path | None = None, progress: bool = False, **recipe) -> dict:
    """The glyph-pretrained ViT's record {"state", "recipe", "glyph_accuracy" (held-out),
    "seconds", "history"}: loaded from ``path`` (default :func:`cache_path`) when it holds
    this recipe's, else trained (one thread) and saved there first. ``recipe`` overrides
    :data:`RECIPE` (the test's tiny pretraining)."""
    recipe = {**RECIPE, **recipe}
    path = Path(path) if path is not None else cache_path(recipe)
    if path.exists():
        record = torch.load(path, map_location="cpu", weights_only=True)
        if record["recipe"] == recipe and record["arch"] == ARCH:
            return record
        raise ValueError(f"{path} holds a ViT pretrained with {record['recipe']}, not "
                         f"{recipe}: pass another --cache file")
    glyphs = GlyphsDataset(recipe["glyphs"], recipe["image_size"], seed=recipe["seed"])
    train, val, _ = train_val_test_split(glyphs, recipe["val"], 0.0, seed=recipe["seed"])
    model = vit(len(glyphs.classes), recipe["seed"])
    optimizer = torch.optim.AdamW(model.parameters(), recipe["lr"],
                                  weight_decay=recipe["weight_decay"])
    began = time.perf_counter()
    with torch.enable_grad():
        history = engine.fit(model, train, optimizer, epochs=recipe["epochs"],
                             batch_size=recipe["batch_size"], schedule="cosine",
                             warmup=recipe["warmup"], val_data=val, seed=recipe["seed"],
                             progress=progress)
    record = {"arch": ARCH, "recipe": recipe, "state": model.state_dict(),
              "glyph_accuracy": history[-1]["val_accuracy"],
              "seconds": time.perf_counter() - began,
              "history": [{k: v for k, v in h.items() if isinstance(v, (int, float))}
                          for h in history]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(record, tmp)
    os.replace(tmp, path)  # whole or absent: an interrupted save leaves no half file
    return record


def run(name: str, seed: int, backbone: dict, **kw) -> dict:
    """Results of method ``name`` over the 5 digit tasks from the glyph-pretrained ViT,
    with a new head (``classes=None``) and the global generator seeded first."""
    method, extra = METHODS[name]
    model = vit(backbone["state"]["head.weight"].shape[0], seed)
    model.load_state_dict(backbone["state"])
    kw = {"memory": 100, "epochs": 4, "batch_size": 16, "lr": 3e-3, "seed": seed,
          "progress": False, **extra, **kw}
    inc = Incremental(model, method=method, **kw)
    torch.manual_seed(seed)
    return inc.fit(*scenario(seed))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--cache", default=None, help="the backbone's file (default: under "
                   "$PTCORE_HOME/backbones, named by the recipe)")
    args = p.parse_args()
    torch.set_num_threads(1)
    backbone = pretrained_vit(args.cache, progress=True)
    params = sum(v.numel() for k, v in backbone["state"].items() if not k.startswith("head"))
    print(f"glyph-pretrained ViT: {params} backbone parameters, "
          f"{backbone['recipe']['epochs']} epochs in {backbone['seconds']:.0f} s, held-out "
          f"glyph accuracy {100 * backbone['glyph_accuracy']:.1f}% "
          f"(chance {100 / backbone['state']['head.weight'].shape[0]:.2f}%)", flush=True)
    results = {}
    for seed in args.seeds:
        scenario(seed)  # once per seed, before any run is timed
        for name in args.methods:
            began = time.perf_counter()
            r = run(name, seed, backbone)
            results[name, seed] = [100 * r[k] for k in KEYS] + [time.perf_counter() - began]
            rows = {p: " ".join(f"{a:.2f}" for a in r[f"{p}_incremental"]["accuracy_matrix"][-1])
                    for p in ("class", "task")}
            print(f"seed {seed} {name:18s} AIA {results[name, seed][0]:5.1f} final "
                  f"{results[name, seed][1]:5.1f} forgetting {results[name, seed][2]:5.1f} "
                  f"({results[name, seed][3]:.1f} s); last row, class [{rows['class']}] "
                  f"task [{rows['task']}]", flush=True)
    print("\n" + table(results, args.methods, args.seeds))


if __name__ == "__main__":
    main()
