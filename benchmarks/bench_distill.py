"""pytest-benchmark suite for ptcore.strategies.Distill: the time of one training epoch on the
embedded digits (5 labels per class, the rest of the training split unlabelled), online
(the frozen teacher runs every step) vs offline (its outputs served from a FeatureCache
built once, before the timed epochs; build time in extra_info).

Run: pytest benchmarks/bench_distill.py --benchmark-only -s   (-s prints the ratio line)
PTCORE_BENCH_SHAPES=small (as CI does) trains on 200 samples instead of ~1,250.
"""
import os

import pytest
import torch

from ptcore.data import digits_dataset, k_shot, train_val_test_split
from ptcore.models import create_model
from ptcore.strategies import Distill

TEACHER, STUDENT, IMAGE_SIZE = "resnet18", "mobilenet_v3_small", 32
SMALL = "small" in os.environ.get("PTCORE_BENCH_SHAPES", "").split(",")
_epoch_s = {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # One CPU thread: small images make every op tiny, so several threads mostly wait on
    # each other, and on a shared machine they make the timings noise. (On a GPU: no effect.)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    train, _, _ = train_val_test_split(digits_dataset(IMAGE_SIZE), seed=0)
    labelled, unlabelled = k_shot(train, 5, seed=0)
    if SMALL:
        unlabelled = torch.utils.data.Subset(unlabelled, range(150))
    torch.manual_seed(0)
    teacher = create_model(TEACHER, num_classes=10)
    cache_dir = tmp_path_factory.mktemp("distill_cache")
    first = _distill(teacher, "offline", cache_dir).fit(labelled, unlabelled)
    build_s = first["seconds"] - first["history"][0]["seconds"]  # what the epoch did not take
    yield teacher, labelled, unlabelled, cache_dir, build_s
    torch.set_num_threads(threads)


def _distill(teacher, mode, cache_dir):
    torch.manual_seed(0)
    return Distill(teacher, create_model(STUDENT, num_classes=10), mode=mode,
                   cache_dir=cache_dir, epochs=1, batch_size=64, progress=False)


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_epoch(benchmark, setup, mode):
    teacher, labelled, unlabelled, cache_dir, build_s = setup
    summaries = []

    def fresh_student():  # untimed: a new student each round, as a new run would have
        return (_distill(teacher, mode, cache_dir),), {}

    def epoch(strategy):
        summaries.append(strategy.fit(labelled, unlabelled))

    samples = len(labelled) + len(unlabelled)
    benchmark.group = (f"distill epoch: {TEACHER} → {STUDENT}, digits "
                       f"{IMAGE_SIZE}×{IMAGE_SIZE}, {samples} samples")
    benchmark.pedantic(epoch, setup=fresh_student, rounds=1 if SMALL else 3, warmup_rounds=0)
    # offline: the teacher never runs again; online: every sample, plus the class probe.
    assert summaries[-1]["teacher_samples"] == (0 if mode == "offline" else samples + 1)
    benchmark.extra_info.update(teacher_samples=summaries[-1]["teacher_samples"],
                                cache_build_s=build_s, samples=samples)
    if benchmark.stats is not None:
        _epoch_s[mode] = benchmark.stats.stats.median
        if len(_epoch_s) == 2:
            ratio = _epoch_s["online"] / _epoch_s["offline"]
            benchmark.extra_info["online_over_offline"] = ratio
            print(f"\ndistill epoch: online {_epoch_s['online']:.2f} s, offline "
                  f"{_epoch_s['offline']:.2f} s: offline is {ratio:.2f}× faster (building "
                  f"the cache once took {build_s:.2f} s)")
