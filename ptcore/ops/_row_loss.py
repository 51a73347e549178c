"""Registration shared by the per-row loss ops (kd_loss_rows, kd_loss_topk_rows): fake
kernels and autograd.

Each forward op takes (student, *tensors, *hyperparameters, grad_scale, compute_grad) and
returns per-row losses [N], statistics [N, STATS] and, when ``compute_grad``, the student's
gradient for a gradient of ``grad_scale`` on every row's loss (one pass over the rows
instead of two: the loss is nearly always the graph's last node). The backward then only
rescales that gradient, in place, or not at all when the incoming gradient is what the
forward assumed. Its backward op (grad_rows, *tensors, stats, *hyperparameters) recomputes
from the statistics when the forward did not compute the gradient, or it was used already
(``retain_graph=True``)."""
from __future__ import annotations

import torch

STATS = 7  # per-row statistics the forward saves for backward (see csrc/kd_math.h)

# An incoming gradient within this of what the forward assumed needs no rescaling pass.
_SAME_SCALE = 2.0 ** -22


def forward_args(student: torch.Tensor, labels: torch.Tensor | None, ignore_index: int,
                 reduction: str) -> tuple[float, bool]:
    """(grad_scale, compute_grad) for a forward call on [N, V] ``student`` rows: the gradient
    is computed in the forward when autograd will want it (not under torch.compile, whose
    graphs keep forward and backward apart), for the gradient ``loss.backward()`` sends."""
    compute = (torch.is_grad_enabled() and student.requires_grad
               and not torch.compiler.is_compiling())
    if not compute or reduction in ("none", "sum"):
        return 1.0, compute
    n, classes = student.shape
    if labels is None:
        count = max(n, 1)
    elif labels.device.type == "cpu":
        count = max(int((labels != ignore_index).sum()), 1)
    else:  # counting on a GPU would cost a sync: the backward rescales instead
        return 1.0, compute
    return 1.0 / (count * (classes if reduction == "mean" else 1)), compute


def register(name: str, n_tensors: int) -> None:
    """Fake kernels and autograd for ``ptcore::{name}`` and ``ptcore::_{name}_backward``,
    whose first ``n_tensors`` arguments are tensors (the student first)."""
    backward_op = getattr(torch.ops.ptcore, f"_{name}_backward")

    n_args = len(getattr(torch.ops.ptcore, name).default._schema.arguments)
    n_hyper = n_args - n_tensors - 2  # the last two: grad_scale, compute_grad (defaulted)

    @torch.library.register_fake(f"ptcore::{name}")
    def _(student, *rest, **kwargs):
        given = (student, *rest)
        compute_grad = kwargs.get("compute_grad", given[-1] if len(given) == n_args else False)
        acc = torch.float64 if student.dtype == torch.float64 else torch.float32
        n = student.shape[0]
        grad = (torch.empty_like(student, memory_format=torch.contiguous_format) if compute_grad
                else student.new_empty((0,)))
        return student.new_empty((n,), dtype=acc), student.new_empty((n, STATS), dtype=acc), grad

    @torch.library.register_fake(f"ptcore::_{name}_backward")
    def _(grad_rows, student, *rest):
        return torch.empty_like(student, memory_format=torch.contiguous_format)

    def setup_context(ctx, inputs, output):
        ctx.hyper = inputs[n_tensors:n_tensors + n_hyper]
        extra = inputs[n_tensors + n_hyper:]
        ctx.grad_scale = extra[0] if extra else 1.0
        # Held as an attribute, not saved: the backward hands it to autograd and drops its
        # own reference, so the gradient is not copied on its way into .grad.
        ctx.grad = output[2] if output[2].dim() == 2 else None
        ctx.save_for_backward(*inputs[:n_tensors], output[1])
        # No zero-filled gradients for the statistics and the gradient output (an N×V one).
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(output[1], output[2])

    def backward(ctx, grad_rows, _grad_stats, _grad_grad):
        nones = (None,) * (n_tensors + len(ctx.hyper) + 1)
        if grad_rows is None or not ctx.needs_input_grad[0]:
            return (None,) + nones
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # not computed in the forward, or consumed by an earlier backward
            *tensors, stats = ctx.saved_tensors
            return (backward_op(grad_rows, *tensors, stats, *ctx.hyper),) + nones
        factor = grad_rows.reshape(-1, 1) / ctx.grad_scale
        factor = factor.masked_fill(~torch.isfinite(factor), float("nan"))  # as the kernels do
        if type(factor) is not torch.Tensor:  # traced (Fake/FunctionalTensor): no in-place
            return (grad * factor,) + nones
        # Reading the factor back is free on a CPU (a sync on a GPU: there it multiplies).
        if grad.device.type == "cpu" and bool(((factor - 1).abs() <= _SAME_SCALE).all()):
            return (grad,) + nones
        return (grad.mul_(factor),) + nones

    torch.library.register_autograd(f"ptcore::{name}", backward, setup_context=setup_context)
