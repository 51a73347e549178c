"""Every incremental method on the embedded digits protocol that the tests use: 5 tasks of
2 classes, class-incremental, 30 training images per class, the tiny MobileNetV3 of
tests/strategies/test_incremental_helpers.py trained on task 1 first, memory 100 for every
method that keeps one. Prints average incremental accuracy, final accuracy and forgetting
per method and seed, then a Markdown table of the means (docs/incremental.md).

    PYTHONPATH=$PWD python benchmarks/methods_incremental.py [--seeds 0 1 2] [--methods ...]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "strategies"))
from test_incremental_helpers import run  # noqa: E402  (the tests' protocol and runs)

# name -> (method, extra Incremental arguments)
METHODS = {
    "naive": ("naive", {}),
    "lwf": ("lwf", {}),
    "ewc": ("ewc", {}),
    "replay": ("replay", {}),
    "lwf+replay": ("lwf+replay", {}),
    "wa+replay": ("wa+replay", {}),
    "wa+lwf+replay": ("wa+lwf+replay", {}),
    "bic+replay": ("bic+replay", {}),
    "bic+lwf+replay": ("bic+lwf+replay", {}),
    "der": ("der", {}),
    "der+replay (DER++)": ("der+replay", {}),
    "der+replay, top-2 logits": ("der+replay", {"der_topk": 2}),
    "icarl": ("icarl", {}),
    "simplecil": ("simplecil", {}),
    "ranpac": ("ranpac", {}),
    "aper": ("aper", {}),
    "aper (bn)": ("aper", {"aper_adapt": "bn"}),
}
KEYS = ("average_incremental_accuracy", "final_accuracy", "forgetting")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {}
    for seed in args.seeds:
        for name in args.methods:
            method, kw = METHODS[name]
            began = time.perf_counter()
            r = run(method, seed=seed, **kw)
            results[name, seed] = [100 * r[k] for k in KEYS]
            print(f"seed {seed} {name:26s} AIA {results[name, seed][0]:5.1f} final "
                  f"{results[name, seed][1]:5.1f} forgetting {results[name, seed][2]:5.1f} "
                  f"({time.perf_counter() - began:.1f} s)", flush=True)
    print("\n| method | average incremental accuracy | final accuracy | forgetting |")
    print("|---|---|---|---|")
    for name in args.methods:
        cells = []
        for i in range(len(KEYS)):
            vals = [results[name, s][i] for s in args.seeds]
            cells.append(f"{sum(vals) / len(vals):.1f} ({' / '.join(f'{v:.1f}' for v in vals)})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
