"""pytest-benchmark suite: ptcore.kd_loss vs the eager reference vs torch.compile(reference).

Run: pytest benchmarks/bench_kd_loss.py --benchmark-only [-k vocab32k]
PTCORE_BENCH_SHAPES=small (as CI does) keeps to the small shape; PTCORE_BENCH_MEMORY=1 adds
peak extra memory (one subprocess per case on CPU) to extra_info."""
import os

import pytest
import torch

from kd_cases import (DTYPES, PASSES, PROVIDERS, SHAPES, bytes_moved, make_inputs,
                      peak_extra_bytes, step)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_shapes = os.environ.get("PTCORE_BENCH_SHAPES", "small,vocab32k,vocab128k").split(",")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("shape", _shapes)
def test_kd_loss(benchmark, provider, pass_, dtype_name, shape):
    n, v = SHAPES[shape]
    s, t = make_inputs(n, v, DTYPES[dtype_name], DEVICE)
    step(provider, s, t, pass_)  # warm-up (and compilation)

    def run():
        step(provider, s, t, pass_)
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"kd_loss {shape} {dtype_name} {pass_}"
    benchmark.pedantic(run, rounds=5 if n * v > 1e7 else 20, iterations=1)
    moved = bytes_moved(n, v, DTYPES[dtype_name], pass_)
    benchmark.extra_info["bytes_moved"] = moved
    if benchmark.stats is not None:  # None under --benchmark-disable (the CI smoke run)
        benchmark.extra_info["GB_per_s"] = moved / benchmark.stats.stats.median / 1e9
    if os.environ.get("PTCORE_BENCH_MEMORY") == "1":
        extra = peak_extra_bytes(provider, n, v, dtype_name, pass_, DEVICE)
        benchmark.extra_info["peak_extra_bytes"] = extra
        benchmark.extra_info["peak_extra_vs_input"] = extra / (moved / (2 if pass_ == "fwd" else 5))
