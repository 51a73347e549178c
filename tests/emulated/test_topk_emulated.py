"""The top-k KD kernels, emulated, where the parity sweep does not reach: the tail bucket, K
above the block size (several rounds of the K loop), labels inside and outside the top-k
(the __syncthreads_or that decides who rewrites the label's entry), K = 0 and K = V, long
rows and misaligned ones; against the float64 reference and the CPU kernels, under every
seed."""
import pytest
import torch

from ptcore import reference

from tests.helpers import requires_native
from tests.ops import test_parity as sweep

pytestmark = requires_native

SEEDS = (0, 1, 2, 3)
# (n, V, K, dtype, offset of the student's rows in elements, labels)
CASES = [(7, 300, 5, torch.float32, 0, True), (3, 5000, 600, torch.bfloat16, 1, True),
         (4, 64, 64, torch.float16, 0, False), (4, 33, 0, torch.float32, 0, True),
         (2, 40000, 8, torch.float32, 3, True), (5, 4096, 1, torch.float16, 0, False)]
TEMPERATURE = 1.5


def _inputs(n, v, k, dtype, tail, seed=0):
    """Rounded student logits; the teacher as its top-K logits, or log-probabilities for the
    tail bucket; labels: ignored, inside the top-k, outside it, in turn."""
    g = torch.Generator().manual_seed(n * 131 + v + k)
    s = (torch.randn(n, v, generator=g, dtype=torch.float64) * 3).to(dtype).double()
    t = torch.randn(n, v, generator=g, dtype=torch.float64) * 3
    values, indices = (t.log_softmax(-1) if tail else t).topk(k, dim=-1)
    values = values.to(dtype).double()
    labels = torch.randint(0, v, (n,), generator=g)
    for i in range(n):
        if i % 3 == 0:
            labels[i] = -100
        elif i % 3 == 1 and k:
            labels[i] = indices[i, k // 2]
        elif k < v:
            outside = torch.ones(v, dtype=torch.bool)
            outside[indices[i]] = False
            labels[i] = outside.nonzero()[0, 0]
    return s, values, indices, labels


def _args(labels, tail):
    hard, soft = (0.5, 0.7) if labels is not None else (0.0, 1.0)
    return (TEMPERATURE, hard, soft, -100, True, tail)


def _offset(x, dtype, offset):
    n, v = x.shape
    buf = torch.zeros(n * v + offset, dtype=dtype)
    out = buf[offset:].view(n, v)
    out.copy_(x)
    return out


def _tolerances(s, values, labels, dtype, ref_grad):
    """As the parity sweep's for a top-k case (loss per row, gradient)."""
    case = (("topk", None), s.shape[0], s.shape[1], dtype, TEMPERATURE,
            "labels" if labels is not None else "randn", "none")
    return (sweep._loss_atol(case, s, values, labels),
            sweep._grad_atol(case, s, values, ref_grad, labels))


def _native(ops, s, values, indices, labels, dtype, offset, tail, grad_rows):
    x = _offset(s, dtype, offset)
    v = values.to(dtype)
    args = _args(labels, tail)
    rows, stats, grad_f = ops.kd_loss_topk_rows(x, v, indices, labels, *args, 1.0, True)
    backward = getattr(ops, "kd_loss_topk_rows_backward", None) or ops._kd_loss_topk_rows_backward
    grad_b = backward(grad_rows.float(), x, v, indices, labels, stats, *args)
    return rows.double(), grad_f.double(), grad_b.double()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tail", [False, True], ids=["plain", "tail"])
@pytest.mark.parametrize("n,v,k,dtype,offset,with_labels", CASES,
                         ids=[f"{n}x{v}-k{k}-{str(d)[6:]}-off{o}{'-labels' * w}"
                              for n, v, k, d, o, w in CASES])
def test_topk_emulated(emu, n, v, k, dtype, offset, with_labels, tail, seed):
    s, values, indices, labels = _inputs(n, v, k, dtype, tail)
    labels = labels if with_labels else None
    grad_rows = torch.linspace(-1.5, 2.0, n, dtype=torch.float64)
    x = s.clone().requires_grad_()
    ref = reference.kd_loss_topk_rows(x, values, indices, labels, *_args(labels, tail))
    ref_f, = torch.autograd.grad(ref.sum(), x, retain_graph=True)
    ref_b, = torch.autograd.grad((ref * grad_rows).sum(), x)

    emu.configure(seed)
    rows, grad_f, grad_b = _native(emu, s, values, indices, labels, dtype, offset, tail, grad_rows)
    loss_atol, grad_atol = _tolerances(s, values, labels, dtype, ref_b)
    rtol = sweep.GRAD_RTOL[dtype]
    torch.testing.assert_close(rows, ref.detach(), rtol=1e-5, atol=loss_atol, equal_nan=True)
    torch.testing.assert_close(grad_f, ref_f, rtol=rtol, atol=grad_atol, equal_nan=True)
    torch.testing.assert_close(grad_b, ref_b, rtol=rtol, atol=grad_atol, equal_nan=True)

    cpu = _native(torch.ops.ptcore, s, values, indices, labels, dtype, offset, tail, grad_rows)
    torch.testing.assert_close(rows, cpu[0], rtol=1e-5, atol=loss_atol, equal_nan=True)
    torch.testing.assert_close(grad_f, cpu[1], rtol=rtol, atol=grad_atol, equal_nan=True)
    torch.testing.assert_close(grad_b, cpu[2], rtol=rtol, atol=grad_atol, equal_nan=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_ignored_rows_leave_other_rows_alone(emu, seed):
    """Found by the emulation: with a hard term, the top-k gradient kernels rewrote the entry
    of a row's label even when the row was ignored (label -100), reading s[-100] and writing
    g[-100] of that row: column V - 100 of the row before it, or before the tensor for row 0.
    Row 1 here is ignored: row 0's column 200 must keep its gradient."""
    s, values, indices, _ = _inputs(3, 300, 5, torch.float32, False)
    labels = torch.tensor([5, -100, 7])
    grad_rows = torch.ones(3, dtype=torch.float64)
    x = s.clone().requires_grad_()
    ref = reference.kd_loss_topk_rows(x, values, indices, labels, *_args(labels, False))
    ref_grad, = torch.autograd.grad(ref.sum(), x)
    emu.configure(seed)
    _, grad_f, grad_b = _native(emu, s, values, indices, labels, torch.float32, 0, False,
                                grad_rows)
    for grad in (grad_f, grad_b):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
