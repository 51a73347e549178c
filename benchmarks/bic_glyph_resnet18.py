"""BiC against replay on the demo's glyph-pretrained ResNet-18 (the file ptcore ships,
ptcore/weights/glyphs/resnet18; docs/demo.md): the digits protocol of the tests (16×16, 5
tasks of 2 classes, class-incremental, ``--shots`` training images per class, a quarter of
the images held out) from that backbone with a new head (``classes=None``: task 1 is
learned like the others), 4 epochs a task, batch 16, lr 3e-3, memory 100. The protocol on
which issue 25 compared BiC with Avalanche's (93.3 ± 1.2 final accuracy there). Prints each
run, then the Markdown table of the means (docs/incremental.md).

    PYTHONPATH=$PWD python benchmarks/bic_glyph_resnet18.py [--seeds 0 1 2] [--shots 30]
        [--methods ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from methods_incremental import table, timed_runs  # noqa: E402  (which also puts the tests'
from test_incremental_helpers import scenario  # noqa: E402  helpers on the path)

from ptcore.demo.backbones import SHIPPED  # noqa: E402
from ptcore.models import create_model  # noqa: E402
from ptcore.strategies import Incremental  # noqa: E402

METHODS = {
    "naive": ("naive", {}),
    "replay": ("replay", {}),
    "bic+replay": ("bic+replay", {}),
    "bic+replay, validation beside": ("bic+replay", {"bic_validation": "beside"}),
    "bic+lwf+replay": ("bic+lwf+replay", {}),
    "bic+lwf+replay, validation beside": ("bic+lwf+replay", {"bic_validation": "beside"}),
    "wa+lwf+replay": ("wa+lwf+replay", {}),
}


def run(name: str, seed: int, shots: int, **kw) -> dict:
    """Results of method ``name`` from the shipped glyph ResNet-18 with a new 0-row head
    grown task by task (the global generator seeded first: it draws the new rows)."""
    method, extra = METHODS[name]
    torch.manual_seed(seed)
    model = create_model("resnet18", weights=str(SHIPPED), num_classes=2, progress=False)
    kw = {"memory": 100, "epochs": 4, "batch_size": 16, "lr": 3e-3, "seed": seed,
          "progress": False, **extra, **kw}
    inc = Incremental(model, method=method, **kw)
    torch.manual_seed(seed)
    return inc.fit(*scenario(seed, shots))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--shots", type=int, default=30)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = p.parse_args()
    torch.set_num_threads(1)
    results = timed_runs(args.seeds, args.methods, lambda name, seed: run(name, seed, args.shots),
                         prepare=lambda seed: scenario(seed, args.shots), width=34)
    print("\n" + table(results, args.methods, args.seeds))


if __name__ == "__main__":
    main()
