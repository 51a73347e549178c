"""Benchmark cases for ptcore.fused_linear_kd_loss against the unfused path it replaces
(logits by matmul, ptcore.kd_loss or kd_loss_topk, autograd's matmul backward), with a full
teacher (its hidden states and lm_head weight) or its top-64, and against Liger-Kernel's
fused linear losses where liger_kernel imports (CUDA). Shared by the pytest-benchmark suite
(bench_fused_linear.py) and the ratio table (fused_linear_table.py).

Memory accounting (docs/llm.md): the peak of the tensor bytes allocated during one forward +
backward, above the inputs; "extra" is that peak less the gradients the step returns
(hidden states' and weight's, in the dtype autograd gives them), which every path must
produce. CUDA: the caching allocator's peak. CPU: the same count from the profiler's memory
events (the bytes ATen allocates; the process's RSS would add glibc's heap policy, whose
dynamic mmap threshold keeps freed ~31 MiB blocks resident, which is not the op's)."""
from __future__ import annotations

import contextlib

import torch
from torch.profiler import ProfilerActivity, profile

import ptcore

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


def liger_available() -> str | None:
    """None when Liger-Kernel's fused linear losses can run here, else why not."""
    if not torch.cuda.is_available():
        return "Liger-Kernel's kernels are Triton, CUDA only"
    try:
        import liger_kernel.transformers  # noqa: F401 (only whether it imports)
    except ImportError as e:
        return f"liger_kernel is not importable ({e})"
    return None


def _liger_loss(x, w, teacher, fp32_weight_grad):
    """Liger's forward KL (LigerFusedLinearJSD with jsd_beta=0; no T² factor) against a full
    teacher; a top-k teacher has no Liger form (Liger-Kernel issue #441), so it is scattered
    into the dense [N, V] target LigerFusedLinearKLDivLoss takes, as a user would have to.
    The weight gradient is summed in float32 or in the weight's dtype, as ours is."""
    from liger_kernel import transformers as lt

    kw = dict(temperature=TEMPERATURE, accum_dtype=torch.float32 if fp32_weight_grad else None)
    if "teacher_hidden" in teacher:
        return lt.LigerFusedLinearJSD(jsd_beta=0.0, **kw)(
            x, w, teacher["teacher_hidden"], teacher["teacher_weight"], None)
    values, indices = teacher["teacher_values"], teacher["teacher_indices"]
    target = torch.zeros(x.shape[0], w.shape[0], device=x.device, dtype=x.dtype)
    target.scatter_(1, indices, (values / TEMPERATURE).softmax(-1).to(x.dtype))
    return lt.LigerFusedLinearKLDivLoss(**kw)(x, w, target)


def step(provider, x, w, teacher, chunk_size=None, *, autocast=None, fp32_weight_grad=True):
    """One forward + backward (gradients for hidden and weight); returns (loss, bytes of
    those gradients). ``autocast``: a dtype to run the matmuls in under torch.autocast."""
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    amp = (torch.autocast(x.device.type, dtype=autocast) if autocast is not None
           else contextlib.nullcontext())
    with amp:
        if provider == "fused":
            loss = ptcore.fused_linear_kd_loss(x, w, **teacher, temperature=TEMPERATURE,
                                               chunk_size=chunk_size,
                                               fp32_weight_grad=fp32_weight_grad)
        elif provider == "liger":
            loss = _liger_loss(x, w, teacher, fp32_weight_grad)
        elif "teacher_hidden" in teacher:
            with torch.no_grad():
                t = teacher["teacher_hidden"] @ teacher["teacher_weight"].T
            loss = ptcore.kd_loss(x @ w.T, t, temperature=TEMPERATURE)
        else:
            loss = ptcore.kd_loss_topk(x @ w.T, teacher["teacher_values"],
                                       teacher["teacher_indices"], temperature=TEMPERATURE)
    loss.backward()
    grads = sum(t.grad.numel() * t.grad.element_size() for t in (x, w))
    return loss.detach(), grads


def peak_bytes(fn, device) -> tuple[int, object]:
    """(peak tensor bytes allocated while ``fn()`` runs above what was allocated before it,
    what ``fn`` returned); on CUDA after one warm-up call (cuBLAS workspaces etc.)."""
    if torch.device(device).type == "cuda":
        fn()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, out
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    now = top = 0
    for _, nbytes in events:
        now += nbytes
        top = max(top, now)
    return top, out


def peak_memory(provider, x, w, teacher, chunk_size=None, **kw) -> tuple[int, int]:
    """(peak bytes allocated during one step above what was allocated before it, bytes of
    the gradients it returns); see the module's docstring."""
    top, (_, grads) = peak_bytes(lambda: step(provider, x, w, teacher, chunk_size, **kw),
                                 x.device)
    return top, grads
