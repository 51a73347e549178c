"""Registration shared by the per-row loss ops (kd_loss_rows, kd_loss_topk_rows): fake
kernels and autograd. Each forward returns per-row losses [N] and statistics [N, STATS];
its backward op takes (grad_rows, *tensor inputs, stats, *hyperparameters)."""
from __future__ import annotations

import torch

STATS = 6  # per-row statistics the forward saves for backward (see csrc/kd_math.h)


def register(name: str, n_tensors: int) -> None:
    """Fake kernels and autograd for ``ptcore::{name}`` and ``ptcore::_{name}_backward``,
    whose first ``n_tensors`` arguments are tensors (the student first)."""
    backward_op = getattr(torch.ops.ptcore, f"_{name}_backward")

    @torch.library.register_fake(f"ptcore::{name}")
    def _(student, *rest):
        acc = torch.float64 if student.dtype == torch.float64 else torch.float32
        n = student.shape[0]
        return student.new_empty((n,), dtype=acc), student.new_empty((n, STATS), dtype=acc)

    @torch.library.register_fake(f"ptcore::_{name}_backward")
    def _(grad_rows, student, *rest):
        return torch.empty_like(student, memory_format=torch.contiguous_format)

    def setup_context(ctx, inputs, output):
        ctx.hyper = inputs[n_tensors:]
        ctx.save_for_backward(*inputs[:n_tensors], output[1])
        ctx.mark_non_differentiable(output[1])

    def backward(ctx, grad_rows, _grad_stats):
        *tensors, stats = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            grad = backward_op(grad_rows, *tensors, stats, *ctx.hyper)
        return (grad,) + (None,) * (n_tensors + len(ctx.hyper) - 1)

    torch.library.register_autograd(f"ptcore::{name}", backward, setup_context=setup_context)
