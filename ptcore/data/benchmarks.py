"""Class-incremental benchmarks by name, with the class orders the literature fixes.

Split CIFAR-100 and Split ImageNet-subset (ImageNet-100) are compared across papers with
one class order: iCaRL's, which PyCIL reproduces as ``np.random.seed(1993);
np.random.permutation(100)`` (PyCIL's utils/data_manager.py with ``shuffle: true, seed:
1993``; the same order as iCaRL's and PODNet's published code). Task t holds classes
``order[t*size:(t+1)*size]``. Labels stay the dataset's own class ids (tasks arrive in the
benchmark's order; inside a task the head's rows follow the class ids, which changes no
accuracy).
"""
from __future__ import annotations

from dataclasses import dataclass

from ptcore.data.official import folder_splits, official_splits

__all__ = ["PYCIL_SEED", "Benchmark", "BENCHMARKS", "class_order", "benchmark_splits",
           "benchmark_tasks"]

PYCIL_SEED = 1993


@dataclass(frozen=True)
class Benchmark:
    dataset: str  # a torchvision dataset name, or "folder" (ImageFolder splits under root)
    num_classes: int
    seed: int = PYCIL_SEED
    help: str = ""


BENCHMARKS = {
    "split-cifar100": Benchmark("CIFAR100", 100, help="CIFAR-100's train/test splits; "
                                "root holds cifar-100-python/"),
    "split-imagenet-subset": Benchmark("folder", 100, help="ImageNet-100 (the 100-class "
                                       "subset of PODNet/PyCIL) as root/train/<wnid>/ and "
                                       "root/val/<wnid>/"),
}


def class_order(num_classes: int, seed: int = PYCIL_SEED) -> list[int]:
    """PyCIL's shuffled class order: ``np.random.seed(seed); np.random.permutation(n)``."""
    import numpy as np

    state = np.random.get_state()  # leave the global generator as it was
    try:
        np.random.seed(seed)
        return np.random.permutation(num_classes).tolist()
    finally:
        np.random.set_state(state)


def _benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def benchmark_splits(name: str, root, *, transforms: dict | None = None,
                     download: bool = False) -> dict:
    """The benchmark's official {"train", "test"} datasets (ImageNet-subset's "val" is its
    test set, as in the literature)."""
    b = _benchmark(name)
    if b.dataset == "folder":
        splits = folder_splits(root, transforms=transforms)
        splits.setdefault("test", splits.pop("val", None))
    else:
        splits = official_splits(b.dataset, root, transforms=transforms, download=download)
    classes = len(splits["train"].classes)
    if classes != b.num_classes:
        raise ValueError(f"{name} needs {b.num_classes} classes, {str(root)!r} has {classes}")
    return {"train": splits["train"], "test": splits["test"]}


def benchmark_tasks(name: str, tasks: int) -> list[list[int]]:
    """The classes of each of ``tasks`` equal tasks, in the benchmark's class order."""
    b = _benchmark(name)
    if not isinstance(tasks, int) or tasks < 1 or b.num_classes % tasks:
        raise ValueError(f"tasks={tasks!r} must divide the {b.num_classes} classes of {name}")
    order, size = class_order(b.num_classes, b.seed), b.num_classes // tasks
    return [order[i:i + size] for i in range(0, b.num_classes, size)]
