"""Every incremental method on the embedded digits protocol that the tests use: 5 tasks of
2 classes, class-incremental, 30 training images per class, the tiny MobileNetV3 of
tests/strategies/test_incremental_helpers.py trained on task 1 first, memory 100 for every
method that keeps one. Prints average incremental accuracy, final accuracy and forgetting
per method and seed, then a Markdown table of the means with each run's wall time
(docs/incremental.md). The runs of a seed are timed one after another in this process,
after its pretraining, so their times compare as ratios on a shared machine; ``--repeats``
times each run that many times (interleaved) and keeps the median.

    PYTHONPATH=$PWD python benchmarks/methods_incremental.py [--seeds 0 1 2] [--methods ...]
        [--repeats 1]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "strategies"))
from test_incremental_helpers import (pretrained_state, run,  # noqa: E402  (the tests'
                                      scenario)  # protocol and runs)

# name -> (method, extra Incremental arguments)
METHODS = {
    "naive": ("naive", {}),
    "lwf": ("lwf", {}),
    "ewc": ("ewc", {}),
    "replay": ("replay", {}),
    "replay, mixed batches": ("replay", {"replay_schedule": "mixed"}),
    "replay, mixed, 6 epochs": ("replay", {"replay_schedule": "mixed", "epochs": 6}),
    "replay, mixed, 8 epochs": ("replay", {"replay_schedule": "mixed", "epochs": 8}),
    "replay, mixed, 12 epochs": ("replay", {"replay_schedule": "mixed", "epochs": 12}),
    "lwf+replay": ("lwf+replay", {}),
    "lwf+replay, mixed": ("lwf+replay", {"replay_schedule": "mixed"}),
    "wa+replay": ("wa+replay", {}),
    "wa+lwf+replay": ("wa+lwf+replay", {}),
    "bic+replay": ("bic+replay", {}),
    "bic+replay, mixed": ("bic+replay", {"replay_schedule": "mixed"}),
    "bic+replay, validation beside": ("bic+replay", {"bic_validation": "beside"}),
    "bic+replay, memory 110": ("bic+replay", {"memory": 110}),
    "bic+lwf+replay": ("bic+lwf+replay", {}),
    "bic+lwf+replay, validation beside": ("bic+lwf+replay", {"bic_validation": "beside"}),
    "der": ("der", {}),
    "der+replay (DER++)": ("der+replay", {}),
    "der+replay (DER++), mixed": ("der+replay", {"replay_schedule": "mixed"}),
    "der+replay, top-2 logits": ("der+replay", {"der_topk": 2}),
    "a-gem": ("a-gem", {}),
    "mas": ("mas", {}),
    "mas, mas_lambda=0.1": ("mas", {"mas_lambda": 0.1}),
    "er-ace": ("er-ace", {}),
    "er-ace, mixed": ("er-ace", {"replay_schedule": "mixed"}),
    "icarl": ("icarl", {}),
    "simplecil": ("simplecil", {}),
    "ranpac": ("ranpac", {}),
    "gdumb": ("gdumb", {}),
    "gdumb, 16 epochs": ("gdumb", {"epochs": 16}),
    "aper": ("aper", {}),
    "aper (bn)": ("aper", {"aper_adapt": "bn"}),
}
KEYS = ("average_incremental_accuracy", "final_accuracy", "forgetting")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(1)
    results, seconds = {}, {}
    for seed in args.seeds:
        scenario(seed), pretrained_state(seed)  # once per seed, before any run is timed
        for repeat in range(args.repeats):
            for name in args.methods:
                method, kw = METHODS[name]
                began = time.perf_counter()
                r = run.__wrapped__(method, seed=seed, **kw)  # not the tests' cached run
                seconds.setdefault((name, seed), []).append(time.perf_counter() - began)
                results[name, seed] = [100 * r[k] for k in KEYS] + [seconds[name, seed][-1]]
                print(f"seed {seed} {name:26s} AIA {results[name, seed][0]:5.1f} final "
                      f"{results[name, seed][1]:5.1f} forgetting {results[name, seed][2]:5.1f} "
                      f"({results[name, seed][3]:.1f} s)", flush=True)
        for name in args.methods:
            results[name, seed][3] = statistics.median(seconds[name, seed])
    print("\n" + table(results, args.methods, args.seeds))


def timed_runs(seeds, names, run_one, prepare=lambda seed: None, width: int = 26) -> dict:
    """``results[name, seed]`` = [AIA, final, forgetting (%), wall time (s)] of
    ``run_one(name, seed)`` (an Incremental results dict), the runs of a seed one after
    another after ``prepare(seed)`` (data, pretraining: not timed); prints each run."""
    results = {}
    for seed in seeds:
        prepare(seed)
        for name in names:
            began = time.perf_counter()
            r = run_one(name, seed)
            results[name, seed] = [100 * r[k] for k in KEYS] + [time.perf_counter() - began]
            print(f"seed {seed} {name:{width}s} AIA {results[name, seed][0]:5.1f} final "
                  f"{results[name, seed][1]:5.1f} forgetting {results[name, seed][2]:5.1f} "
                  f"({results[name, seed][3]:.1f} s)", flush=True)
    return results


def table(results: dict, names, seeds) -> str:
    """The Markdown table of ``results[name, seed]`` = [AIA, final, forgetting (%), wall
    time (s)]: each cell the mean over ``seeds``, then the seeds' values in parentheses."""
    lines = [("| method | average incremental accuracy | final accuracy | forgetting | "
              "wall time, s |"), "|---|---|---|---|---|"]
    for name in names:
        cells = []
        for i in range(len(KEYS) + 1):
            vals = [results[name, s][i] for s in seeds]
            cells.append(f"{sum(vals) / len(vals):.1f} ({' / '.join(f'{v:.1f}' for v in vals)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
