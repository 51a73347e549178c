"""Prints the ratio table for ptcore.kd_loss (or, with --topk, ptcore.kd_loss_topk): every
provider timed side by side in one process (interleaved rounds, median), with achieved GB/s
and peak extra memory.

Usage: python benchmarks/kd_table.py [--shapes vocab32k] [--dtypes float32] [--rounds 5]
       [--topk 8,64]"""
import argparse
import itertools
import statistics
import sys
import time

import torch

from kd_cases import (DTYPES, PASSES, PROVIDERS, SHAPES, bytes_moved, make_inputs,
                      peak_extra_bytes, step)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_case(n, v, dtype, pass_, rounds, device, topk=None):
    s, t = make_inputs(n, v, dtype, device, topk=topk)
    times = {p: [] for p in PROVIDERS}
    for p in PROVIDERS:
        step(p, s, t, pass_)  # warm-up, compile
    for _ in range(rounds):  # interleaved so drift hits every provider alike
        for p in PROVIDERS:
            _sync(device)
            t0 = time.perf_counter()
            step(p, s, t, pass_)
            _sync(device)
            times[p].append(time.perf_counter() - t0)
    return {p: statistics.median(ts) for p, ts in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="small,vocab32k,vocab128k")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--passes", default=",".join(PASSES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--topk", default="", help="comma-separated K: time kd_loss_topk against "
                    "the teacher's top-K logits instead of kd_loss")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print("| shape | teacher | dtype | pass | ptcore ms | eager ms | compile ms | vs eager "
          "| vs compile | ptcore GB/s | extra mem ptcore/eager/compile (× one input) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    topks = [int(k) for k in args.topk.split(",") if k] or [None]
    for shape, topk, dname, pass_ in itertools.product(
            args.shapes.split(","), topks, args.dtypes.split(","), args.passes.split(",")):
        n, v = SHAPES[shape]
        med = time_case(n, v, DTYPES[dname], pass_, args.rounds, device, topk)
        moved = bytes_moved(n, v, DTYPES[dname], pass_, topk)
        one = DTYPES[dname].itemsize * n * v  # one student-sized input
        mem = "-" if args.no_memory else "/".join(
            f"{peak_extra_bytes(p, n, v, dname, pass_, device, topk) / one:.2f}"
            for p in PROVIDERS)
        teacher = f"top-{topk}" if topk else "full"
        print(f"| {n}×{v} | {teacher} | {dname} | {pass_} | {med['ptcore'] * 1e3:.1f} | "
              f"{med['eager'] * 1e3:.1f} | {med['compile'] * 1e3:.1f} | "
              f"{med['eager'] / med['ptcore']:.2f}× | {med['compile'] / med['ptcore']:.2f}× | "
              f"{moved / med['ptcore'] / 1e9:.1f} | {mem} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
