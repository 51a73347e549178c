"""pytest-benchmark suite: ptcore.kd_loss and ptcore.kd_loss_topk vs the eager reference vs
torch.compile(reference).

Run: pytest benchmarks/bench_kd_loss.py --benchmark-only [-k vocab32k] [-k topk]
PTCORE_BENCH_SHAPES=small (as CI does) keeps to the small shape; PTCORE_BENCH_MEMORY=1 adds
peak extra memory (one subprocess per case on CPU) to extra_info."""
import os

import pytest
import torch

from kd_cases import (DTYPES, PASSES, PROVIDERS, SHAPES, TOPK, bytes_moved, make_inputs,
                      peak_extra_bytes, step)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_shapes = os.environ.get("PTCORE_BENCH_SHAPES", "small,vocab32k,vocab128k").split(",")


def _run_case(benchmark, provider, pass_, dtype_name, shape, topk=None):
    n, v = SHAPES[shape]
    s, t = make_inputs(n, v, DTYPES[dtype_name], DEVICE, topk=topk)
    step(provider, s, t, pass_)  # warm-up (and compilation)

    def run():
        step(provider, s, t, pass_)
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    name = f"kd_loss_topk K={topk}" if topk else "kd_loss"
    benchmark.group = f"{name} {shape} {dtype_name} {pass_}"
    benchmark.pedantic(run, rounds=5 if n * v > 1e7 else 20, iterations=1)
    moved = bytes_moved(n, v, DTYPES[dtype_name], pass_, topk)
    benchmark.extra_info["bytes_moved"] = moved
    if benchmark.stats is not None:  # None under --benchmark-disable (the CI smoke run)
        benchmark.extra_info["GB_per_s"] = moved / benchmark.stats.stats.median / 1e9
    if os.environ.get("PTCORE_BENCH_MEMORY") == "1":
        extra = peak_extra_bytes(provider, n, v, dtype_name, pass_, DEVICE, topk)
        benchmark.extra_info["peak_extra_bytes"] = extra
        one_input = torch.tensor([], dtype=DTYPES[dtype_name]).element_size() * n * v
        benchmark.extra_info["peak_extra_vs_input"] = extra / one_input


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("shape", _shapes)
def test_kd_loss(benchmark, provider, pass_, dtype_name, shape):
    _run_case(benchmark, provider, pass_, dtype_name, shape)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("topk", TOPK)
@pytest.mark.parametrize("shape", _shapes)
def test_kd_loss_topk(benchmark, provider, pass_, topk, shape):
    """bfloat16 student logits (the usual LLM case) against the teacher's top-k."""
    _run_case(benchmark, provider, pass_, "bfloat16", shape, topk)
