"""The demo's pretrained backbones: trained by ptcore itself on :class:`GlyphsDataset`
(characters of many scripts, no digits) with one recipe, :func:`glyphs_recipe`.

The ResNet-18 of the quick preset ships inside the package (ptcore/weights/glyphs/, made by
examples/pretrain_glyphs.yaml, which is this recipe). Other architectures and input sizes
(the seed preset's ResNet-50, AlexNet and VGG-19) are built on first use by running the
same recipe into a cache directory named by the recipe's fingerprint, and reused after.
Either way a backbone is a local weights file with its provenance record beside it,
loaded through the ordinary ``weights=`` path.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ptcore.runner.provenance import read_provenance

__all__ = ["SHIPPED", "glyphs_recipe", "backbone_path", "ensure_backbone", "cache_root"]

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "glyphs" / "resnet18" / "model.pt"
# The shipped file's recipe lives in examples/pretrain_glyphs.yaml with this `out`.
SHIPPED_OUT = "ptcore/weights/glyphs"


def pretrain_epochs(image_size: int) -> int:
    """Epochs over the glyphs: 3 at the digits' small sizes; 1 at the seed preset's 64×64,
    where a training sample costs 15 ms (ResNet-50), 54 ms (VGG-19-BN) and 7 ms (AlexNet)
    on the 2-core CPU (batches of 64; channels-last saved under 10%), so that one epoch over
    the 27,708 training glyphs builds all three in 35 minutes (measured) instead of two hours."""
    return 3 if image_size <= 32 else 1


# Networks without residual connections: AdamW at 3e-3 (the recipe of the ResNets) sent
# VGG-19-BN's loss from ln 382 to 115 within 10 steps and left it at chance, as did AdamW
# 1e-3 and 1e-4; SGD with momentum (their papers' optimizer) and a warm-up was the one that
# left chance (measured on 6,000 glyphs at 32px: 5.905 after 100 steps, still falling).
# The seed preset trains them so on the digits too (VGG-19-BN teacher 36.3% -> 80.7%;
# AlexNet's digits model, which no later stage uses, 52.6% -> 20.0%: docs/demo.md).
PLAIN = ("vgg19_bn", "vgg19", "vgg16_bn", "vgg16", "alexnet")


def plain_options(arch: str) -> dict:
    """The optimizer settings (engine and strategy keys) ``arch`` trains with in the demo's
    recipes: SGD with momentum, lr 0.02 and a 10% warm-up for :data:`PLAIN` networks, else
    nothing (the recipe's own)."""
    return {"optimizer": "sgd", "momentum": 0.9, "warmup": 0.1, "lr": 0.02} \
        if arch in PLAIN else {}


def glyphs_recipe(out: str, *, arch: str = "resnet18", image_size: int = 16,
                  seed: int = 0) -> dict:
    """The pretrain stage config that makes ``arch``'s backbone into ``out``/``arch``."""
    return {"stage": "pretrain", "seed": seed, "out": out,
            "model": {"name": arch}, "data": {"dataset": "glyphs", "image_size": image_size,
                                              "val": 0.02, "test": 0.05},
            "engine": {"epochs": pretrain_epochs(image_size), "batch_size": 64,
                       "precise_bn": 4,
                       **{k: v for k, v in plain_options(arch).items() if k != "lr"}},
            "strategy": {"mode": "full", "lr": plain_options(arch).get("lr", 3e-3),
                         "layer_decay": 1.0},
            "methods": {arch: {"model": arch, "save_dtype": "float16"}}}


def _recipe_key(cfg: dict) -> str:
    """What weights made by ``cfg`` depend on: everything but where they go and how the
    progress shows."""
    from ptcore.config import validate_config

    recipe = {k: v for k, v in validate_config(cfg).items() if k != "out"}
    recipe["engine"] = {k: v for k, v in recipe["engine"].items() if k != "progress"}
    return json.dumps(recipe, sort_keys=True)


def cache_root() -> Path:
    """$PTCORE_HOME/backbones, by default ~/.cache/ptcore/backbones."""
    home = os.environ.get("PTCORE_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ptcore")
    return Path(home) / "backbones"


def backbone_path(arch: str, image_size: int) -> Path:
    """Where ``arch``'s glyph-pretrained weights for ``image_size`` inputs are: the shipped
    file if its provenance says it was made by this recipe, else a cache entry named by
    the recipe's and ptcore's fingerprint (which :func:`ensure_backbone` builds)."""
    from ptcore._version import __version__

    key = _recipe_key(glyphs_recipe("-", arch=arch, image_size=image_size))
    if key == _recipe_key(read_provenance(SHIPPED, verify=False)["config"]):
        return SHIPPED
    digest = hashlib.sha256(f"{key} ptcore {__version__}".encode()).hexdigest()[:16]
    return cache_root() / f"{arch}-{image_size}px-{digest}" / arch / "model.pt"


def ensure_backbone(arch: str, image_size: int, *, progress: bool = True) -> Path:
    """:func:`backbone_path`, verified against its provenance record; a missing or
    damaged cache entry is (re)built by running the recipe (with progress bars). The
    shipped file is never rebuilt: if it fails verification the installation is broken."""
    path = backbone_path(arch, image_size)
    if path == SHIPPED:
        read_provenance(path)
        return path
    try:
        read_provenance(path)
        return path
    except ValueError:
        pass
    from ptcore.runner.pipeline import run_stages

    folder = path.parent.parent
    print(f"building the glyph-pretrained {arch} ({image_size}px) once into {folder}",
          flush=True)
    recipe = glyphs_recipe(str(folder), arch=arch, image_size=image_size)
    run_stages([recipe], folder / "report", command=f"ptcore backbone {arch} {image_size}px",
               progress=progress)
    read_provenance(path)
    return path
