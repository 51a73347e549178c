"""Runs a case of the parity sweep (tests/ops/test_parity.py's case tuples) on the emulated
CUDA kernels and on the CPU kernels, at the row-op level: per-row losses reduced here, the
gradient from the forward (compute_grad) and from the backward op, both checked."""
from __future__ import annotations

import torch

from tests.ops import test_parity as sweep

IGNORE = -100


def row_gradients(case, labels):
    """The gradient of (reduced loss · upstream) with respect to each row's loss, from the
    sweep's own reduction (written apart from ptcore)."""
    (_, _), n, v, _, _, _, red = case
    rows = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    loss = sweep._reduce(rows, labels, red, v)
    (loss * sweep._upstream(case, n)).sum().backward()
    return rows.grad


def place(x, dtype, variant):
    """x as dtype; for "noncontig", rows one element into a wider buffer (misaligned)."""
    x = x.to(dtype)
    if variant != "noncontig":
        return x
    wide = torch.zeros(x.shape[0], x.shape[1] + 1, dtype=dtype)
    wide[:, 1:] = x
    return wide[:, 1:]


def op_args(case, labels):
    """The row op's arguments after the tensors: kd_loss_rows' (T, divergence, β, hard and
    soft weights, ignore_index, scale_by_t2) or kd_loss_topk_rows' (T, hard, soft,
    ignore_index, scale_by_t2, tail_bucket)."""
    (op, div), _, _, _, temp, _, _ = case
    kw = sweep._kwargs(case, labels)
    hard, soft = kw.get("hard_weight", 0.0), kw.get("soft_weight", 1.0)
    if op == "kd_loss":
        return (temp, div, kw["beta"], hard, soft, IGNORE, True)
    return (temp, hard, soft, IGNORE, True, False)


def run_rows(ops, case, s, t, labels, grad_rows):
    """{rows, stats, grad_f, rows0, stats0, grad_b} from a module of row ops (the emulation,
    or torch.ops.ptcore on the CPU): the forward with its gradient for a uniform gradient on
    the rows' losses (grad_rows[0]; 1 when grad_rows is not uniform), the forward without,
    and the backward for grad_rows."""
    (op, _), n, _, dtype, _, variant, _ = case
    x = place(s, dtype, variant)
    args = op_args(case, labels)
    uniform = n > 0 and bool((grad_rows == grad_rows[0]).all())
    scale = float(grad_rows[0]) if uniform else 1.0
    if op == "kd_loss":
        y = place(t, dtype, variant)
        rows, stats, grad_f = ops.kd_loss_rows(x, y, labels, *args, scale, True)
        rows0, stats0, _ = ops.kd_loss_rows(x, y, labels, *args, 1.0, False)
        backward = getattr(ops, "kd_loss_rows_backward", None) or ops._kd_loss_rows_backward
        grad_b = backward(grad_rows.float(), x, y, labels, stats, *args)
    else:
        values, indices = sweep._topk_teacher(t, case)
        values = values.to(dtype)
        rows, stats, grad_f = ops.kd_loss_topk_rows(x, values, indices, labels, *args, scale, True)
        rows0, stats0, _ = ops.kd_loss_topk_rows(x, values, indices, labels, *args, 1.0, False)
        backward = (getattr(ops, "kd_loss_topk_rows_backward", None)
                    or ops._kd_loss_topk_rows_backward)
        grad_b = backward(grad_rows.float(), x, values, indices, labels, stats, *args)
    return dict(rows=rows, stats=stats, grad_f=grad_f, rows0=rows0, stats0=stats0,
                grad_b=grad_b, uniform=uniform)


def bits(x):
    return x.view({2: torch.int16, 4: torch.int32}[x.element_size()])


def check_against_reference(case, s, t, labels, got):
    """The sweep's comparison with the float64 reference: the reduced loss, and both
    gradients where the forward's was made for the same upstream gradient."""
    (_, _), n, v, dtype, _, variant, red = case
    ref_loss, ref_grad = sweep._run_reference(case, s, t, labels)
    loss = sweep._reduce(got["rows"].double(), labels, red, v)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5,
                               atol=sweep._loss_atol(case, s, t, labels), equal_nan=True)
    grads = [("grad_b", got["grad_b"].double())]
    if got["uniform"]:
        grads.append(("grad_f", got["grad_f"].double()))
    for name, grad in grads:
        want = ref_grad
        if variant == "inf_grad" and n:  # as in the sweep: ptcore gives row 0 all NaN
            assert not torch.isfinite(want[0]).any() and torch.isnan(grad[0]).all(), name
            grad, want = grad[1:], want[1:]
        torch.testing.assert_close(grad, want, rtol=sweep.GRAD_RTOL[dtype],
                                   atol=sweep._grad_atol(case, s, t, want, labels),
                                   equal_nan=True, msg=lambda m: f"{name}: {m}")


def check_against_cpu(case, s, t, labels, got, cpu):
    """The emulated CUDA kernels against the CPU kernels on the same inputs: losses and
    gradients at the sweep's tolerances, the row maxima of rows with a finite loss exactly
    (a max has no rounding)."""
    dtype = case[3]
    per_row = case[:-1] + ("none",)  # the sweep's loss tolerance for one row's loss
    torch.testing.assert_close(got["rows"], cpu["rows"], rtol=1e-5,
                               atol=sweep._loss_atol(per_row, s, t, labels), equal_nan=True)
    # Where a row's loss is NaN its maxima differ (fmaxf drops a NaN, the CPU's max does not);
    # the backward makes the whole row NaN from its other statistics either way.
    finite = torch.isfinite(cpu["rows"])
    for k in (0, 2):  # kMaxS, kMaxT
        torch.testing.assert_close(got["stats"][finite, k], cpu["stats"][finite, k], rtol=0,
                                   atol=0)
    for name in ("grad_f", "grad_b"):
        want = cpu[name].double()
        torch.testing.assert_close(got[name].double(), want, rtol=sweep.GRAD_RTOL[dtype],
                                   atol=sweep._grad_atol(case, s, t, want, labels),
                                   equal_nan=True, msg=lambda m: f"{name}: {m}")


def check_forward_without_grad(got):
    """Without the gradient to write, the forward's statistics and losses are the same bits."""
    assert torch.equal(bits(got["rows0"]), bits(got["rows"]))
    assert torch.equal(bits(got["stats0"]), bits(got["stats"]))


def check_same_bits(first, got, seed):
    """Another seed (schedule, poison, guard layout) gave the same bits."""
    for name, x in first.items():
        if isinstance(x, torch.Tensor):
            assert torch.equal(bits(got[name]), bits(x)), f"{name} differs under seed {seed}"
