"""Logit KD against DKD, DIST, feature-level KD (FitNets, attention transfer, RKD) and CRD on the
distillation protocol of docs/distill.md: 5 labels per class of the digits, the rest
unlabelled; the tests' CNN teacher at 16×16 trained on the whole training split and a
smaller CNN student at 8×8 (feature methods need feature maps on both sides), hints from
the student's first block (16×8×8) to the teacher's second (32×8×8), RKD's relations on the
flattened embeddings before each side's classifier. Prints one row per method and seed
(accuracy, wall time), then a table of the means with each run's wall time; docs/distill.md
holds it. The runs of a seed are timed one after another after its teacher, so their times
compare as ratios on a shared machine.

    PYTHONPATH=$PWD python benchmarks/methods_distill.py [--seeds 0 1 2] [--epochs 8]
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "strategies"))
from test_distill import teacher_net  # noqa: E402  (the tests' nets: one definition)
from test_distill_methods import cnn_student as student_net  # noqa: E402

from ptcore import engine
from ptcore.data import digits_dataset, k_shot, train_val_test_split
from ptcore.strategies import Distill

METHODS = {
    "labels only": None,
    "kd": {},
    "kd, reverse_kl": {"divergence": "reverse_kl"},
    "kd, jsd": {"divergence": "jsd"},
    "dkd": {"method": "dkd"},
    "dkd, dkd_beta=2": {"method": "dkd", "dkd_beta": 2.0},
    "dkd, dkd_beta=1": {"method": "dkd", "dkd_beta": 1.0},
    "dist": {"method": "dist"},
    "rkd+kd": {"method": "rkd", "features": [("4", "8")]},
    "fitnets+kd": {"method": "fitnets", "features": [("2", "6")]},
    "at+kd": {"method": "at", "features": [("2", "6")]},
    "fitnets, no logit KD": {"method": "fitnets", "features": [("2", "6")], "soft_weight": 0.0},
    "at, no logit KD": {"method": "at", "features": [("2", "6")], "soft_weight": 0.0},
    "kd+crd": {"method": "kd+crd"},
    "kd+crd, infonce": {"method": "kd+crd", "crd_objective": "infonce"},
    "crd, no logit KD": {"method": "crd", "soft_weight": 0.0},
}


def one_seed(seed, epochs, methods):
    train16, _, test16 = train_val_test_split(digits_dataset(16), seed=seed)
    train8, _, test8 = train_val_test_split(digits_dataset(8), seed=seed)
    labelled, unlabelled = k_shot(train8, 5, seed=seed)
    torch.manual_seed(seed)
    teacher = teacher_net()
    engine.fit(teacher, train16, torch.optim.AdamW(teacher.parameters(), 3e-3), epochs=8,
               batch_size=64, seed=seed, progress=False)
    row, seconds = {"teacher": engine.evaluate(teacher, test16)["accuracy"]}, {}
    for name in methods:
        kw = METHODS[name]
        began = time.perf_counter()
        if kw is None:  # the same student on the labels alone, as many steps as KD
            net = student_net(seed)
            steps = epochs * math.ceil((len(labelled) + len(unlabelled)) / 64)
            engine.fit(net, labelled, torch.optim.AdamW(net.parameters(), 3e-3,
                                                        weight_decay=0.01),
                       epochs=steps, batch_size=64, warmup=0.1, seed=seed, progress=False)
            row[name] = engine.evaluate(net, test8)["accuracy"]
        else:
            d = Distill(teacher, student_net(seed), temperature=2.0, lr=3e-3, epochs=epochs,
                        seed=seed, progress=False, teacher_input_size=16, **kw)
            d.fit(labelled, unlabelled)
            row[name] = d.evaluate(test8)["accuracy"]
        seconds[name] = time.perf_counter() - began
        print(f"seed {seed} {name:20s} {100 * row[name]:5.1f}%  ({seconds[name]:.1f} s)",
              flush=True)
    return row, seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = p.parse_args()
    torch.set_num_threads(1)
    runs = {s: one_seed(s, args.epochs, args.methods) for s in args.seeds}
    print("\n| method | accuracy, mean (" + " / ".join(f"seed {s}" for s in args.seeds)
          + ") | wall time per run, mean (range) |")
    print("|---|---|---|")
    for n in ["teacher"] + args.methods:
        vals = [100 * runs[s][0][n] for s in args.seeds]
        times = [runs[s][1][n] for s in args.seeds if n in runs[s][1]]
        timed = (f"{sum(times) / len(times):.1f} s ({min(times):.1f}-{max(times):.1f})"
                 if times else "")
        print(f"| {n} | {sum(vals) / len(vals):.1f} ("
              + " / ".join(f"{v:.1f}" for v in vals) + f") | {timed} |")


if __name__ == "__main__":
    main()
