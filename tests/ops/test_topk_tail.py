"""kd_loss_topk with a teacher given as log-probabilities, and its tail bucket."""
import pytest
import torch

import ptcore
from ptcore import reference

from tests.helpers import DEVICES, TOL, loss_tol, requires_native


def _case(n, v, k, dtype=torch.float32, device="cpu", seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, v, generator=g) * scale).to(dtype).to(device)
    t = torch.randn(n, v, generator=g) * scale
    log_probs, indices = t.log_softmax(-1).topk(k, dim=-1)
    return s, t, log_probs.to(device), indices.to(device)


def _run(fn, s, *args, grad_out=None, **kw):
    x = s.detach().clone().requires_grad_()
    loss = fn(x, *args, **kw)
    (loss * (1.0 if grad_out is None else grad_out)).sum().backward()
    return loss.detach().double().cpu(), x.grad.double().cpu()


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,v,k", [(1, 1, 1), (4, 1, 0), (7, 300, 5), (37, 5003, 64), (3, 50, 50)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tail_bucket_matches_reference(device, n, v, k, dtype):
    s, _, lp, idx = _case(n, v, k, dtype, device)
    labels = torch.arange(n, device=device) % v
    labels[::2] = -100
    kw = dict(temperature=1.5, labels=labels, hard_weight=0.3, reduction="none",
              tail_bucket=True)
    grad_out = torch.linspace(0.5, 2.0, n, device=device)
    got = _run(ptcore.kd_loss_topk, s, lp, idx, grad_out=grad_out, **kw)
    want = _run(reference.kd_loss_topk, s.double().cpu(), lp.double().cpu(), idx.cpu(),
                grad_out=grad_out.double().cpu(), **{**kw, "labels": labels.cpu()})
    torch.testing.assert_close(got[0], want[0], rtol=loss_tol(dtype)[0], atol=loss_tol(dtype)[1])
    torch.testing.assert_close(got[1], want[1], rtol=TOL[dtype][0], atol=TOL[dtype][1])


@requires_native
def test_tail_bucket_gradcheck_float64():
    s, _, lp, idx = _case(4, 9, 3, torch.float64)
    x = s.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: ptcore.kd_loss_topk(x, lp, idx, temperature=0.8, tail_bucket=True,
                                      reduction="sum"), (x,), nondet_tol=1e-12)


@requires_native
def test_tail_bucket_is_the_full_teacher_when_k_is_v_and_differs_when_k_is_small():
    s, t, lp, idx = _case(5, 40, 40)
    full = ptcore.kd_loss(s, t, temperature=2.0)
    torch.testing.assert_close(ptcore.kd_loss_topk(s, lp, idx, temperature=2.0, tail_bucket=True),
                               full, rtol=1e-5, atol=1e-6)
    s, _, lp, idx = _case(5, 40, 3)
    with_tail = ptcore.kd_loss_topk(s, lp, idx, tail_bucket=True)
    assert not torch.allclose(with_tail, ptcore.kd_loss_topk(s, lp, idx))


@requires_native
@pytest.mark.parametrize("tail", [False, True])
def test_a_constant_added_to_a_row_leaves_the_renormalised_loss_unchanged(tail):
    """Logits and log-probabilities are the same teacher to the renormalised loss (a row's
    constant cancels in its softmax), and so is a student row shifted by a constant (softmax
    again); the tail bucket needs true log-probabilities, so only the student is shifted."""
    s, t, lp, idx = _case(6, 100, 8)
    logits = t.gather(-1, idx)
    shift = torch.linspace(-50, 50, 6)[:, None]
    base = ptcore.kd_loss_topk(s, lp, idx, temperature=2.0, tail_bucket=tail, reduction="none")
    if not tail:
        torch.testing.assert_close(ptcore.kd_loss_topk(s, logits, idx, temperature=2.0,
                                                       reduction="none"), base)
        torch.testing.assert_close(ptcore.kd_loss_topk(s, lp + shift, idx, temperature=2.0,
                                                       reduction="none"), base)
    torch.testing.assert_close(ptcore.kd_loss_topk(s + shift, lp, idx, temperature=2.0,
                                                   tail_bucket=tail, reduction="none"),
                               base, rtol=1e-5, atol=1e-5)


@requires_native
def test_values_holding_all_the_mass_leave_an_empty_tail():
    s, t, _, idx = _case(4, 30, 4)
    logits = t.gather(-1, idx) + 5.0  # Σ exp ≥ 1: no tail, the renormalised loss
    torch.testing.assert_close(ptcore.kd_loss_topk(s, logits, idx, tail_bucket=True),
                               ptcore.kd_loss_topk(s, logits, idx))


def test_tail_bucket_must_be_a_bool():
    s, _, lp, idx = _case(2, 10, 3)
    with pytest.raises(TypeError, match="tail_bucket"):
        ptcore.kd_loss_topk(s, lp, idx, tail_bucket="yes")
