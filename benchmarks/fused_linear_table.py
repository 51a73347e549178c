"""Prints time and peak-extra-memory ratios of ptcore.fused_linear_kd_loss against the
unfused path (matmul + kd_loss + matmul backward), forward + backward, for a full teacher and
a top-64 teacher, over growing N at one H and V; both providers timed side by side in one
process (median of --rounds after a warm-up); memory as fused_linear_cases.py counts it
(peak tensor bytes above the inputs, less the gradients every path returns). With --liger
(CUDA) Liger-Kernel's fused linear losses are a third column, or a line says why not.

    PYTHONPATH=. python benchmarks/fused_linear_table.py [--h 1024 --v 32000 --n 2048 4096]
    PYTHONPATH=. python benchmarks/fused_linear_table.py --memory-only --n 4096 8192
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fused_linear_cases import (TEACHERS, liger_available, make_inputs,  # noqa: E402
                                peak_memory, step)

from ptcore.ops.fused_linear_kd import _default_chunk  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MiB = 2 ** 20


def _time(provider, x, w, t, chunk, rounds, **kw):
    times = []
    for _ in range(rounds + 1):  # the first is a warm-up
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(provider, x, w, t, chunk, **kw)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def _parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--h", type=int, default=4096)
    p.add_argument("--v", type=int, default=128256)
    p.add_argument("--n", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--chunk", type=int, default=0, help="rows per chunk (0: the op's default, "
                   "about N·H/V and at least 256)")
    p.add_argument("--teachers", nargs="+", default=list(TEACHERS), choices=TEACHERS)
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="of the inputs (the weights too, unless --autocast)")
    p.add_argument("--autocast", action="store_true", help="float32 inputs and weights, "
                   "matmuls in --dtype under torch.autocast (mixed precision)")
    p.add_argument("--weight-dtype-sum", action="store_true",
                   help="fp32_weight_grad=False: sum the weight gradient in its own dtype")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=3)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--memory-only", action="store_true")
    what.add_argument("--no-memory", action="store_true")
    p.add_argument("--liger", action="store_true", help="add Liger-Kernel (CUDA, if importable)")
    p.add_argument("--json", help="also write the rows here")
    return p


def _measure(provider, x, w, t, chunk, args, kw):
    out = {}
    if not args.memory_only:
        out["s"] = _time(provider, x, w, t, chunk, args.rounds, **kw)
    if not args.no_memory:
        peak, grads = peak_memory(provider, x, w, t, chunk, **kw)
        out.update(peak_mib=peak / MiB, grads_mib=grads / MiB, extra_mib=(peak - grads) / MiB)
    return out


def main(argv=None):
    args = _parser().parse_args(argv)
    dtype = DTYPES[args.dtype]
    kw = dict(autocast=dtype if args.autocast else None,
              fp32_weight_grad=not args.weight_dtype_sum)
    providers = ["unfused", "fused"]
    if args.liger:
        why_not = liger_available()
        if why_not is None:
            providers.append("liger")
        else:
            print(f"liger: skipped, {why_not}")
    print(f"device={args.device} threads={torch.get_num_threads()} H={args.h} V={args.v} "
          f"{'autocast ' if args.autocast else ''}{args.dtype}"
          f"{', weight gradient summed in its dtype' if args.weight_dtype_sum else ''}; "
          "ratios are fused / unfused (forward + backward); MiB: peak less the gradients")
    print("time ratios on a shared machine are noisy; memory is not (it counts tensor bytes)")
    rows = []
    for teacher in args.teachers:
        for n in args.n:
            chunk = min(n, args.chunk or _default_chunk(n, args.h, args.v))
            x, w, t = make_inputs(n, args.h, args.v, teacher,
                                  torch.float32 if args.autocast else dtype, args.device)
            row = {"teacher": teacher, "n": n, "h": args.h, "v": args.v, "chunk": chunk,
                   "dtype": args.dtype, "autocast": args.autocast,
                   # the yardstick: the student's logits and their gradient
                   "logits_and_grad_mib": 2 * n * args.v * dtype.itemsize / MiB}
            for provider in providers:
                try:
                    row[provider] = _measure(provider, x, w, t, args.chunk or None, args, kw)
                except Exception as e:  # a third-party kernel's failure is a result, not ours
                    if provider != "liger":
                        raise
                    row[provider] = {"error": f"{type(e).__name__}: {e}"}
            del x, w, t
            rows.append(row)
            print(_line(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


def _line(row):
    u, f = row["unfused"], row["fused"]
    parts = [f"{row['teacher']:6} N={row['n']:<6d} chunk={row['chunk']:<5d}"]
    if "s" in u:
        parts.append(f"time {u['s']:.3f}s → {f['s']:.3f}s ({f['s'] / u['s']:.2f}×)")
    if "extra_mib" in u:
        parts.append(f"extra {u['extra_mib']:.1f} → {f['extra_mib']:.1f} MiB "
                     f"({f['extra_mib'] / max(u['extra_mib'], 1e-9):.3f}; "
                     f"{f['extra_mib'] / row['logits_and_grad_mib']:.3f} of logits + grad "
                     f"{row['logits_and_grad_mib']:.0f}), grads {u['grads_mib']:.1f} MiB, "
                     f"peak ratio {f['peak_mib'] / u['peak_mib']:.3f}")
    g = row.get("liger", {})
    if "error" in g:
        parts.append(f"liger failed: {g['error'][:200]}")
    elif g:
        parts.append("liger " + ", ".join(
            [f"{g['s']:.3f}s (fused/liger {f['s'] / g['s']:.2f}×)"] * ("s" in g)
            + [f"extra {g['extra_mib']:.1f} MiB"] * ("extra_mib" in g)))
    return " | ".join(parts)


if __name__ == "__main__":
    main()
