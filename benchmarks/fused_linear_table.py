"""Prints time and peak-extra-memory ratios of ptcore.fused_linear_kd_loss against the
unfused path (matmul + kd_loss + matmul backward), forward + backward, for a full teacher and
a top-64 teacher, over growing N at one H and V; both providers timed side by side in one
process (median of --rounds), memory in a fresh process per case (CPU) or from the CUDA
allocator.

    PYTHONPATH=. python benchmarks/fused_linear_table.py [--h 1024 --v 32000 --n 512 1024]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fused_linear_cases import TEACHERS, make_inputs, peak_extra_bytes, step  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _time(provider, x, w, t, chunk, rounds):
    times = []
    for _ in range(rounds + 1):  # the first is a warm-up
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(provider, x, w, t, chunk)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h", type=int, default=4096)
    parser.add_argument("--v", type=int, default=128256)
    parser.add_argument("--n", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--chunk-div", type=int, default=8,
                        help="chunk_size = N / this (the default chunk suits N in thousands)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args(argv)
    print(f"device={DEVICE} threads={torch.get_num_threads()} H={args.h} V={args.v} float32; "
          "ratios are fused / unfused (forward + backward)")
    print(f"{'teacher':8} {'N':>6} {'chunk':>6} {'unfused s':>10} {'fused s':>9} {'time':>6} "
          f"{'unfused MiB':>12} {'fused MiB':>10} {'memory':>7}")
    for teacher in TEACHERS:
        for n in args.n:
            chunk = max(1, n // args.chunk_div)
            x, w, t = make_inputs(n, args.h, args.v, teacher, device=DEVICE)
            tu = _time("unfused", x, w, t, chunk, args.rounds)
            tf = _time("fused", x, w, t, chunk, args.rounds)
            del x, w, t
            line = f"{teacher:8} {n:6d} {chunk:6d} {tu:10.3f} {tf:9.3f} {tf / tu:6.2f}"
            if not args.no_memory:
                mu = peak_extra_bytes("unfused", (n, args.h, args.v), teacher, device=DEVICE)
                mf = peak_extra_bytes("fused", (n, args.h, args.v), teacher, chunk, DEVICE)
                line += f" {mu / 2**20:12.1f} {mf / 2**20:10.1f} {mf / max(mu, 1):7.3f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
