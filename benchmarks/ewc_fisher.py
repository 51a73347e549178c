"""EWC's Fisher: today's estimate (one forward and backward per batch, ptcore/strategies/
incremental/per_sample.py) against the one before it (torch.func vmap over grad), side by
side in one process on the demo's glyph ResNet-18 at its input size (16×16, quick preset).

    PYTHONPATH=$PWD python benchmarks/ewc_fisher.py [--samples 24 200] [--rounds 5]
        [--threads N] [--base REV]

The earlier EWC is read from git (``--base``, by default the commit before per_sample.py
came) and run in this process. Rounds run the two in a fresh random order each round, after
a warm-up; the table gives the median seconds per estimate and their ratio, and the largest
difference between the two Fisher estimates over the largest entry (each normalised to
mean 1, as EWC now keeps it; the earlier one kept it unnormalised)."""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from ptcore.data import digits_dataset, train_val_test_split
from ptcore.demo.backbones import SHIPPED
from ptcore.demo.presets import PRESETS
from ptcore.models import create_model
from ptcore.strategies.incremental import registry
from ptcore.strategies.incremental.ewc import EWC

ROOT = Path(__file__).resolve().parents[1]
NEW = "ptcore/strategies/incremental/per_sample.py"


def base_rev() -> str:
    added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", NEW],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return f"{added[-1]}~1"


def old_ewc(rev: str) -> type:
    """The EWC class of ptcore/strategies/incremental/ewc.py at ``rev`` (its method is not
    registered: the registry keeps today's)."""
    source = subprocess.run(["git", "show", f"{rev}:ptcore/strategies/incremental/ewc.py"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("ewc_before")
    register = registry.register
    registry.register = lambda cls: cls
    try:
        exec(compile(source, f"{rev}:ewc.py", "exec"), module.__dict__)
    finally:
        registry.register = register
    return module.EWC


def normalised(fisher: dict) -> torch.Tensor:
    flat = torch.cat([f.flatten() for f in fisher.values()])
    return flat / flat.mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[24, 200])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--base", default=None, help="the git revision of the earlier EWC")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rev = args.base or base_rev()
    size = PRESETS["quick"]["image_size"]
    model = create_model("resnet18", num_classes=10, weights=str(SHIPPED), progress=False)
    train, _, _ = train_val_test_split(digits_dataset(size), 0.0, 0.25, seed=0)
    estimators = {"before (vmap)": old_ewc(rev), "today (per_sample)": EWC}
    print(f"glyph ResNet-18 at {size}x{size}, {args.threads} threads, base {rev}, "
          f"median of {args.rounds} rounds after a warm-up")
    print(f"{'samples':>7}  {'before s':>9}  {'today s':>8}  {'ratio':>6}  {'max rel diff':>12}")
    for n in args.samples:
        data = torch.utils.data.Subset(train, range(n))
        times = {name: [] for name in estimators}
        fishers = {}
        for r in range(args.rounds + 1):
            order = list(estimators)
            random.Random(r).shuffle(order)
            for name in order:
                ewc = estimators[name](1.0)
                start = time.perf_counter()
                ewc.update(model, data, F.cross_entropy, device="cpu", progress=False)
                if r:  # round 0 warms up
                    times[name].append(time.perf_counter() - start)
                fishers[name] = normalised(ewc.fisher)
        before, today = (statistics.median(t) for t in times.values())
        a, b = fishers.values()
        diff = (a - b).abs().max() / a.abs().max()
        print(f"{n:>7}  {before:>9.2f}  {today:>8.2f}  {before / today:>5.1f}x  "
              f"{diff.item():>12.2e}")


if __name__ == "__main__":
    main()
