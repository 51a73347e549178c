"""Benchmark cases for ptcore.kd_loss and ptcore.kd_loss_topk: providers, shapes, and how
each is timed and measured.

A case's teacher is a full [N, V] tensor (kd_loss) or, with ``topk=K``, the pair (values
[N, K], indices [N, K]) of the teacher's K largest logits (kd_loss_topk). Shared by the
pytest-benchmark suite (bench_kd_loss.py) and the ratio table (kd_table.py)."""
from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys

import torch

import ptcore
from ptcore import reference

SHAPES = {"small": (256, 1000), "vocab32k": (4096, 32000), "vocab128k": (1024, 128256),
          "gpu128k": (8192, 128256)}  # the H200 bandwidth target; too big for CPU runs
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PASSES = ("fwd", "fwd+bwd")
PROVIDERS = ("ptcore", "eager", "compile")
TOPK = (8, 64)  # teacher logits kept by the kd_loss_topk cases
TEMPERATURE = 2.0


@functools.lru_cache(maxsize=None)
def _compiled(topk: bool):
    return torch.compile(reference.kd_loss_topk if topk else reference.kd_loss)


def loss_fn(provider, topk: bool = False):
    if provider == "ptcore":
        return ptcore.kd_loss_topk if topk else ptcore.kd_loss
    if provider == "eager":
        return reference.kd_loss_topk if topk else reference.kd_loss
    if provider == "compile":
        return _compiled(topk)
    raise ValueError(f"unknown provider {provider!r}")


def make_inputs(n, v, dtype, device="cpu", seed=0, topk=None):
    """(student, teacher): the teacher is [N, V], or (values, indices) of its top ``topk``."""
    # Generated in their own dtype and shape: no freed temporaries to raise the process's
    # peak memory before a step is measured (peak_extra_bytes).
    g = torch.Generator(device=device).manual_seed(seed)
    s = torch.randn(n, v, generator=g, device=device, dtype=dtype).mul_(2)
    if topk:  # K distinct classes per row (one per stride of V // K), values descending
        values = torch.randn(n, topk, generator=g, device=device, dtype=dtype).mul_(2)
        values = values.sort(dim=-1, descending=True).values
        stride = v // topk
        indices = torch.randint(0, stride, (n, topk), generator=g, device=device) \
            + torch.arange(topk, device=device) * stride
        return s, (values, indices)
    return s, torch.randn(n, v, generator=g, device=device, dtype=dtype).mul_(2)


def step(provider, s, t, pass_):
    """One forward (and backward) of the loss; returns the loss."""
    teacher = t if isinstance(t, tuple) else (t,)
    fn = loss_fn(provider, topk=isinstance(t, tuple))
    if pass_ == "fwd":
        with torch.no_grad():
            return fn(s, *teacher, temperature=TEMPERATURE)
    x = s.detach().requires_grad_()
    loss = fn(x, *teacher, temperature=TEMPERATURE)
    loss.backward()
    return loss


def bytes_moved(n, v, dtype, pass_, topk=None):
    """Compulsory traffic: s and t read once, and for fwd+bwd the gradient written (a fused
    kernel need not read a row twice from memory). Top-k: the teacher is K values and
    int64 indices per row."""
    size = torch.tensor([], dtype=dtype).element_size()
    student = size * n * v
    teacher = n * topk * (size + 8) if topk else student
    return student + teacher if pass_ == "fwd" else 2 * student + teacher


def peak_extra_bytes(provider, n, v, dtype_name, pass_, device="cpu", topk=None):
    """Peak memory above the inputs during one step (the second, so compilation is excluded).

    CUDA: the caching allocator's peak. CPU: the rise of the process's peak RSS, measured
    in a fresh process so earlier cases cannot hide it."""
    if device == "cuda":
        s, t = make_inputs(n, v, DTYPES[dtype_name], device, topk=topk)
        step(provider, s, t, pass_)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(provider, s, t, pass_)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    code = (
        "import json, sys; sys.path.insert(0, %r)\n"
        "from kd_cases import _measure_rss; "
        "print(json.dumps(_measure_rss(%r, %d, %d, %r, %r, %r)))"
        % (os.path.dirname(os.path.abspath(__file__)), provider, n, v, dtype_name, pass_, topk))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _high_water_rss():
    """Peak resident bytes of this process image. VmHWM restarts at exec; ru_maxrss would
    carry over the (possibly much larger) parent's peak from before the fork."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _measure_rss(provider, n, v, dtype_name, pass_, topk=None):
    s, t = make_inputs(n, v, DTYPES[dtype_name], topk=topk)
    # A smaller warm-up compiles and allocates once without raising the high-water mark.
    ws, wt = make_inputs(max(1, n // 64), v, DTYPES[dtype_name], topk=topk)
    step(provider, ws, wt, pass_)
    del ws, wt
    base = _high_water_rss()
    step(provider, s, t, pass_)
    return _high_water_rss() - base
