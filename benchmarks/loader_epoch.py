"""Loader-bound epoch time with and without worker processes.

Writes an ImageFolder of JPEGs (default 2,000 at 224 px, 10 classes) unless --root names
one, then times full passes over it through ``ptcore.engine.make_loader`` (the loader every
ptcore DataLoader comes from) with each --workers count, decoding and transforming as a
224-px eval pipeline does, with no model: the time is the input pipeline's alone. Counts
are measured side by side in one process, each --repeat times (best kept), and the load
average is printed with them: on a shared machine only the ratio means much.

    PYTHONPATH=. python benchmarks/loader_epoch.py --workers 0 2
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import datasets, transforms

from ptcore.engine import make_loader


def write_images(root: Path, n: int, size: int, classes: int = 10) -> None:
    """``n`` photo-like JPEGs (smooth colour fields plus noise: they compress, and decode,
    like photos rather than like flat or pure-noise images)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        folder = root / f"class{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0, 6, 3)
        base = np.stack([np.sin(a * xx + b * yy + k * c) for k in range(3)], -1) * 90 + 128
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


def epoch_seconds(data, workers: int, batch_size: int) -> float:
    loader = make_loader(data, batch_size, num_workers=workers)
    t0 = time.perf_counter()
    total = 0.0
    for x, _ in loader:
        total += float(x[:, 0, 0, 0].sum())  # touch each batch
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", help="an existing ImageFolder (default: write one to a temp dir)")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)  # the main process only collates: keep it off the workers' CPUs
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        if not args.root:
            write_images(root, args.images, args.size)
        tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                                 transforms.ToTensor(),
                                 transforms.Normalize([0.485, 0.456, 0.406],
                                                      [0.229, 0.224, 0.225])])
        data = datasets.ImageFolder(str(root), transform=tf)
        print(f"{len(data)} images from {root}; {len(os.sched_getaffinity(0))} CPUs; load "
              f"average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        results = {}
        for _ in range(args.repeat):  # interleaved, so a load spike hits every count alike
            for w in args.workers:
                results[w] = min(results.get(w, float("inf")),
                                 epoch_seconds(data, w, args.batch_size))
        base = results[args.workers[0]]
        print(f"{'workers':>8} {'epoch s':>8} {'images/s':>9} {'speed-up':>9}")
        for w in args.workers:
            print(f"{w:>8} {results[w]:>8.2f} {len(data) / results[w]:>9.0f} "
                  f"{base / results[w]:>8.2f}x")
        print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
