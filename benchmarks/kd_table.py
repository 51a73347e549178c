"""Prints the ratio table for ptcore.kd_loss (or, with --topk, ptcore.kd_loss_topk): every
provider timed side by side in one process (interleaved rounds in a random order, median),
with achieved GB/s and peak extra memory.

Usage: python benchmarks/kd_table.py [--shapes vocab32k] [--dtypes float32] [--rounds 5]
       [--topk 8,64]"""
import argparse
import itertools
import json
import random
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
    order = random.Random(f"{n}x{v}{dtype}{pass_}{topk}")
    for _ in range(rounds):
        # Interleaved so drift hits every provider alike, in a fresh random order each round:
        # a fixed order always runs a provider after the same neighbour, whose leftovers
        # (caches, freed memory) it inherits.
        for p in order.sample(PROVIDERS, len(PROVIDERS)):
            _sync(device)
            t0 = time.perf_counter()
            step(p, s, t, pass_)
            _sync(device)
            times[p].append(time.perf_counter() - t0)
    return {p: statistics.median(ts) for p, ts in times.items()}


def copy_gbps(nbytes, device, rounds):
    """GB/s of a plain copy of ``nbytes`` (read + write) into a reused buffer: the ceiling a
    memory-bound kernel moving those bytes can reach on this machine."""
    half = max(nbytes // 2, 1)
    src = torch.ones(half, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(rounds):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * half / statistics.median(times) / 1e9


def fresh_grad_ms(n, v, dtype, device, rounds):
    """What a freshly allocated gradient-sized tensor costs to fill, against refilling a
    reused one (on a CPU the difference is first-touch page faults)."""
    reused = torch.empty(n, v, dtype=dtype, device=device)
    fresh, again = [], []
    for _ in range(rounds):
        _sync(device)
        t0 = time.perf_counter()
        torch.empty(n, v, dtype=dtype, device=device).fill_(1)
        _sync(device)
        t1 = time.perf_counter()
        reused.fill_(1)
        _sync(device)
        fresh.append(t1 - t0)
        again.append(time.perf_counter() - t1)
    return statistics.median(fresh) * 1e3, statistics.median(again) * 1e3


def peak_gbps(device):
    """The GPU's peak memory bandwidth from its properties (None on a CPU or if unknown)."""
    if device != "cuda":
        return None
    props = torch.cuda.get_device_properties(0)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9  # double data rate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="small,vocab32k,vocab128k")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--passes", default=",".join(PASSES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--topk", default="", help="comma-separated K: time kd_loss_topk against "
                    "the teacher's top-K logits instead of kd_loss")
    ap.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    peak = peak_gbps(device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}"
          + (f" gpu={torch.cuda.get_device_name()} peak={peak:.0f} GB/s" if peak else ""))
    print("| shape | teacher | dtype | pass | ptcore ms | eager ms | compile ms | vs eager "
          "| vs compile | ptcore GB/s | % of copy | % of peak | extra mem ptcore/eager/compile "
          "(× one input) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
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
        gbps = moved / med["ptcore"] / 1e9
        copy = copy_gbps(moved, device, args.rounds)
        pct_peak = f"{100 * gbps / peak:.0f}%" if peak else "-"
        print(f"| {n}×{v} | {teacher} | {dname} | {pass_} | {med['ptcore'] * 1e3:.1f} | "
              f"{med['eager'] * 1e3:.1f} | {med['compile'] * 1e3:.1f} | "
              f"{med['eager'] / med['ptcore']:.2f}× | {med['compile'] / med['ptcore']:.2f}× | "
              f"{gbps:.1f} | {100 * gbps / copy:.0f}% | {pct_peak} | {mem} |", flush=True)
        rows.append(dict(shape=[n, v], teacher=teacher, dtype=dname, pass_=pass_,
                         ms={p: med[p] * 1e3 for p in PROVIDERS}, gbps=gbps, copy_gbps=copy,
                         peak_gbps=peak, extra_mem=mem))
    for shape, dname in itertools.product(args.shapes.split(","), args.dtypes.split(",")):
        n, v = SHAPES[shape]
        fresh, reused = fresh_grad_ms(n, v, DTYPES[dname], device, args.rounds)
        print(f"gradient-sized {n}×{v} {dname}: fill of a fresh tensor {fresh:.1f} ms, of a "
              f"reused one {reused:.1f} ms")
        rows.append(dict(shape=[n, v], dtype=dname, fresh_fill_ms=fresh, reused_fill_ms=reused))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
