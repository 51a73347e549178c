"""Prints the ratio table for ptcore.ops.gather_rows on CPU: every provider timed side by side
in one process (interleaved rounds, median after warm-up), with the default torch threads.

Providers, each producing float32 rows [B, 512] from a 100,000 × 512 store:
  ptcore   gather_rows into a fresh output (as a caller without a buffer gets)
  out      gather_rows(..., out=buf) into a reused buffer
  eager    index_select (+ the scale multiply for int8) and .float(): plain PyTorch
  copy     a plain copy of the same number of bytes (read + written) into a reused buffer

Every call gathers fresh random indices and the copy reads from a rotating place in a
256 MB buffer, so rows come from DRAM, not from a cache warmed by the previous call. The
providers run in a fresh random order each round.

Fresh outputs page-fault: run once more with THP_MEM_ALLOC_ENABLE=1 (torch's CPU allocator
then backs allocations of 2 MiB and more with transparent huge pages) to see that cost shrink.

Usage: python benchmarks/gather_table.py [--batches 1024,4096,16384] [--stores int8,float16,float32]
       [--rounds 101] [--warmup 10] [--threads N]"""
import argparse
import inspect
import itertools
import os
import platform
import random
import statistics
import sys
import time

import torch

import ptcore
from ptcore import ops

ROWS, WIDTH = 100_000, 512
STORES = {"int8": torch.int8, "float16": torch.float16, "float32": torch.float32}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "unknown CPU")
    flags = " AVX2" if " avx2" in info else ""
    flags += " AVX-512" if " avx512f" in info else ""
    return f"{name} ({os.cpu_count()} CPUs{',' if flags else ''}{flags})"


def make_stores(names):
    x = torch.randn(ROWS, WIDTH, generator=torch.Generator().manual_seed(0))
    stores = {}
    for name in names:
        if STORES[name] == torch.int8:
            stores[name] = ops.quantize_rows(x)
        else:
            stores[name] = (x.to(STORES[name]), None)
    return stores


def bytes_moved(store, scales, b):
    """Bytes a gather reads (rows, scales, indices) and writes (float32 rows)."""
    read = b * WIDTH * store.element_size() + b * 8 + (b * 4 if scales is not None else 0)
    return read + b * WIDTH * 4


def providers(store, scales, b, big):
    """name → callable(idx); `big` is the copy's 256 MB source."""
    buf = torch.empty(b, WIDTH)
    has_out = "out" in inspect.signature(ops.gather_rows).parameters
    n = bytes_moved(store, scales, b) // 2  # read n + write n bytes
    dst = torch.empty(n, dtype=torch.uint8)
    at = [0]

    def copy(_):
        at[0] = (at[0] + n) % (big.numel() - n)
        dst.copy_(big[at[0]:at[0] + n])

    def eager(idx):
        rows = store.index_select(0, idx).float()
        return rows * scales.index_select(0, idx)[:, None] if scales is not None else rows

    p = {"ptcore": lambda idx: ops.gather_rows(store, scales, idx, torch.float32)}
    if has_out:
        p["out"] = lambda idx: ops.gather_rows(store, scales, idx, torch.float32, out=buf)
    p["eager"] = eager
    p["copy"] = copy
    return p


def time_case(store, scales, b, big, rounds, warmup, seed):
    fns = providers(store, scales, b, big)
    g = torch.Generator().manual_seed(seed)
    times = {name: [] for name in fns}
    order = random.Random(seed)
    for r in range(warmup + rounds):
        # Interleaved, so drift and a busy neighbour hit every provider, in a fresh random
        # order each round: a provider's time depends on the one before it (the caches and
        # allocator state it leaves), and a fixed or rotating order always puts the same
        # provider after the same one (it moved the int8 `out` median by up to 1.9×).
        for name in order.sample(list(fns), len(fns)):
            idx = torch.randint(0, ROWS, (b,), generator=g)
            t0 = time.perf_counter()
            fns[name](idx)
            t = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1024,4096,16384")
    ap.add_argument("--stores", default=",".join(STORES))
    ap.add_argument("--rounds", type=int, default=101)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.stores.split(",")
    stores = make_stores(names)
    big = torch.ones(1 << 28, dtype=torch.uint8)
    print(f"{cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"ptcore from {os.path.dirname(ptcore.__file__)}; store {ROWS}×{WIDTH}, "
          f"median of {args.rounds} after {args.warmup} warm-up rounds; "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}; load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| store | B | ptcore µs | out µs | eager µs | copy µs | ptcore/eager | out/eager "
          "| ptcore/copy | out/copy | out GB/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, b in itertools.product(names, [int(v) for v in args.batches.split(",")]):
        store, scales = stores[name]
        med = time_case(store, scales, b, big, args.rounds, args.warmup, seed=b)
        out = med.get("out", float("nan"))
        moved = bytes_moved(store, scales, b)
        print(f"| {name} | {b} | {med['ptcore'] * 1e6:.0f} | {out * 1e6:.0f} | "
              f"{med['eager'] * 1e6:.0f} | {med['copy'] * 1e6:.0f} | "
              f"{med['eager'] / med['ptcore']:.2f}× | {med['eager'] / out:.2f}× | "
              f"{med['copy'] / med['ptcore']:.0%} | {med['copy'] / out:.0%} | "
              f"{moved / out / 1e9:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
