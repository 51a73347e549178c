"""Benchmark cases for ptcore.fused_linear_kd_loss against the unfused path it replaces
(logits by matmul, ptcore.kd_loss or kd_loss_topk, autograd's matmul backward), with a full
teacher (its hidden states and lm_head weight) or its top-64. Shared by the pytest-benchmark
suite (bench_fused_linear.py) and the ratio table (fused_linear_table.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

import ptcore
from kd_cases import _high_water_rss

# (N tokens, H hidden, V vocabulary); "llama3" is the target, for a GPU.
SHAPES = {"small": (256, 256, 4096), "cpu128k": (512, 4096, 128256),
          "llama3": (8192, 4096, 128256)}
TEACHERS = ("full", "top64")
PROVIDERS = ("fused", "unfused")
TEMPERATURE = 2.0


def make_inputs(n, h, v, teacher, dtype=torch.float32, device="cpu", seed=0):
    """(hidden [n, h], weight [v, h], teacher kwargs); generated in place at their size so
    that no freed temporaries raise the peak memory measured afterwards."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, h, generator=g, device=device, dtype=dtype)
    w = torch.randn(v, h, generator=g, device=device, dtype=dtype).mul_(h ** -0.5)
    if teacher == "full":
        th = torch.randn(n, h, generator=g, device=device, dtype=dtype)
        tw = torch.randn(v, h, generator=g, device=device, dtype=dtype).mul_(h ** -0.5)
        return x, w, dict(teacher_hidden=th, teacher_weight=tw)
    k = int(teacher.removeprefix("top"))
    values = torch.randn(n, k, generator=g, device=device).sort(dim=-1, descending=True).values
    stride = v // k
    indices = (torch.randint(0, stride, (n, k), generator=g, device=device)
               + torch.arange(k, device=device) * stride)
    return x, w, dict(teacher_values=values, teacher_indices=indices)


def step(provider, x, w, teacher, chunk_size=None):
    """One forward + backward (gradients for hidden and weight); returns the loss."""
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    if provider == "fused":
        loss = ptcore.fused_linear_kd_loss(x, w, **teacher, temperature=TEMPERATURE,
                                           chunk_size=chunk_size)
    elif "teacher_hidden" in teacher:
        with torch.no_grad():
            t = teacher["teacher_hidden"] @ teacher["teacher_weight"].T
        loss = ptcore.kd_loss(x @ w.T, t, temperature=TEMPERATURE)
    else:
        loss = ptcore.kd_loss_topk(x @ w.T, teacher["teacher_values"],
                                   teacher["teacher_indices"], temperature=TEMPERATURE)
    loss.backward()
    return loss


def peak_extra_bytes(provider, shape, teacher, chunk_size=None, device="cpu"):
    """Peak memory above the inputs during one step. CUDA: the caching allocator's peak;
    CPU: the rise of the peak RSS in a fresh process (see kd_cases.peak_extra_bytes)."""
    n, h, v = shape
    if device == "cuda":
        x, w, t = make_inputs(n, h, v, teacher, device=device)
        step(provider, x, w, t, chunk_size)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(provider, x, w, t, chunk_size)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    code = ("import json, sys; sys.path.insert(0, %r)\n"
            "from fused_linear_cases import _measure_rss; "
            "print(json.dumps(_measure_rss(%r, %r, %r, %r)))"
            % (os.path.dirname(os.path.abspath(__file__)), provider, tuple(shape), teacher,
               chunk_size))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure_rss(provider, shape, teacher, chunk_size):
    n, h, v = shape
    x, w, t = make_inputs(n, h, v, teacher)
    # The weight's gradient is the result either way: allocated before the high-water mark.
    w_grad = torch.zeros_like(w)
    step(provider, *make_inputs(4, h, 128, teacher))  # warm-up on a tiny case
    del w_grad
    base = _high_water_rss()
    step(provider, x, w, t, chunk_size)
    return _high_water_rss() - base
