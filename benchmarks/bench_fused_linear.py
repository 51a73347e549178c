"""pytest-benchmark suite: ptcore.fused_linear_kd_loss against the unfused path (matmul +
ptcore.kd_loss / kd_loss_topk + autograd's matmul backward), forward + backward, with a full
teacher (hidden states + lm_head weight) or its top-64.

Run: pytest benchmarks/bench_fused_linear.py --benchmark-only [-k cpu128k]
PTCORE_BENCH_SHAPES=small (as CI does) keeps to the small shape; PTCORE_BENCH_MEMORY=1 adds
peak memory and its extra (less the gradients; see fused_linear_cases.py) to extra_info. The
ratio table: benchmarks/fused_linear_table.py."""
import os

import pytest
import torch

from fused_linear_cases import PROVIDERS, SHAPES, TEACHERS, make_inputs, peak_memory, step

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_shapes = os.environ.get("PTCORE_BENCH_SHAPES", "small,cpu128k").split(",")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("teacher", TEACHERS)
@pytest.mark.parametrize("shape", _shapes)
def test_fused_linear_kd(benchmark, provider, teacher, shape):
    n, h, v = SHAPES[shape]
    x, w, t = make_inputs(n, h, v, teacher, device=DEVICE)
    step(provider, x, w, t)  # warm-up

    def run():
        step(provider, x, w, t)
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"fused_linear_kd {shape} {teacher} fwd+bwd"
    benchmark.pedantic(run, rounds=3 if n * v * h > 1e10 else 10, iterations=1)
    benchmark.extra_info["flops"] = (8 if teacher == "full" else 6) * n * h * v
    if os.environ.get("PTCORE_BENCH_MEMORY") == "1":
        peak, grads = peak_memory(provider, x, w, t)
        benchmark.extra_info["peak_bytes"] = peak
        benchmark.extra_info["peak_extra_bytes"] = peak - grads
        benchmark.extra_info["peak_extra_vs_logits_and_grad"] = (peak - grads) / (8 * n * v)
