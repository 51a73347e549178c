"""Epoch time of partial fine-tuning with and without the feature cache (issue 4).

resnet50 frozen through layer3 (weights=None: the timing does not depend on the values),
the embedded digits (32×32 by default), AdamW, batch 32. Uncached, every step runs conv1…layer3
forward and layer4+fc forward and backward; cached, layer1…3 ran once (at build) and each
step reads their output from the cache. FLOPs alone say ~2.3× per epoch at 224×224.

Run: pytest benchmarks/bench_finetune.py --benchmark-only -s   (or python this file);
PTCORE_BENCH_THREADS=n sets torch's thread count, PTCORE_BENCH_SAMPLES the number of images,
PTCORE_BENCH_SIZE their size (default 32).
"""
import os
import statistics
import sys

import pytest
import torch

from ptcore.data import LabeledSubset, digits_dataset
from ptcore.models import create_model
from ptcore.strategies import FineTune

SAMPLES = int(os.environ.get("PTCORE_BENCH_SAMPLES", 256))
SIZE = int(os.environ.get("PTCORE_BENCH_SIZE", 32))
EPOCHS = 3
_results = {}

if os.environ.get("PTCORE_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["PTCORE_BENCH_THREADS"]))


def run(cached: bool, samples: int = SAMPLES) -> dict:
    """One fine-tuning run; per-epoch seconds from the engine's records, and the total
    (which for the cached run includes building the cache)."""
    data = LabeledSubset(digits_dataset(SIZE), range(samples))
    torch.manual_seed(0)
    ft = FineTune(create_model("resnet50", num_classes=10), mode="partial", freeze="layer3",
                  epochs=EPOCHS, batch_size=32, cache=cached, progress=False)
    summary = ft.fit(data)
    epochs = [r["seconds"] for r in summary["history"]]
    return {"epoch_s": statistics.median(epochs), "total_s": summary["seconds"],
            "cached_epochs": len(summary["cached_epochs"])}


@pytest.mark.parametrize("provider", ["uncached", "cached"])
def test_finetune_epoch(benchmark, provider):
    result = benchmark.pedantic(run, args=(provider == "cached",), rounds=1, iterations=1)
    benchmark.extra_info.update(result, samples=SAMPLES, image_size=SIZE, device="cpu")
    _results[provider] = result
    if len(_results) == 2:
        _print(_results)


def _print(results):
    u, c = results["uncached"], results["cached"]
    print(f"\nresnet50 frozen through layer3, {SAMPLES} digits at {SIZE}x{SIZE}, "
          f"{torch.get_num_threads()} CPU threads:")
    print(f"  epoch: uncached {u['epoch_s']:.2f} s, cached {c['epoch_s']:.2f} s -> "
          f"{u['epoch_s'] / c['epoch_s']:.2f}x per epoch")
    print(f"  {EPOCHS} epochs incl. cache build: uncached {u['total_s']:.2f} s, cached "
          f"{c['total_s']:.2f} s -> {u['total_s'] / c['total_s']:.2f}x")


if __name__ == "__main__":
    _print({"uncached": run(False), "cached": run(True)})
    sys.exit(0)
