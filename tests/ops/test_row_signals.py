"""return_row_signals of kd_loss and kd_loss_topk: the teacher's and the student's top
probability at T and each row's divergence, against float64 computations written here,
from the native kernels' statistics and from the reference when the library is missing."""
import sys

import pytest
import torch

import ptcore

from tests.helpers import DEVICES

T = 2.5


def _case(n=11, v=40, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(n, v, generator=g) * 3, torch.randn(n, v, generator=g) * 3
    return s.to(device), t.to(device)


def _want(log_pt, log_ps_all, log_ps_on_t, div):
    """Top probabilities and the divergence in float64; ``log_ps_on_t``: the student's
    log-probabilities on the teacher's bins."""
    rows = (log_pt.exp() * (log_pt - log_ps_on_t)).sum(-1) if div is None else div
    return log_pt.exp().amax(-1), log_ps_all.exp().amax(-1), rows


def _check(got, want):
    for a, b in zip(got, want):
        assert a.dtype == torch.float32 and not a.requires_grad
        torch.testing.assert_close(a.double().cpu(), b.cpu(), rtol=1e-5, atol=1e-6)


@pytest.fixture(params=["native", "reference"])
def backend(request, monkeypatch):
    """The native kernels (their statistics), or the pure-PyTorch fallback."""
    if request.param == "native" and not ptcore.has_native():
        pytest.skip("native library not loaded")
    if request.param == "reference":
        for name in ("ptcore.ops.kd_loss", "ptcore.ops.kd_loss_topk"):
            monkeypatch.setattr(sys.modules[name], "has_native", lambda: False)
    return request.param


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_full_teacher(backend, device, divergence):
    s, t = _case(device=device)
    s = s.requires_grad_()
    loss, sig = ptcore.kd_loss(s, t, temperature=T, divergence=divergence, beta=0.3,
                               reduction="none", return_row_signals=True)
    log_ps, log_pt = (s.detach().double() / T).log_softmax(-1), (t.double() / T).log_softmax(-1)
    ps, pt = log_ps.exp(), log_pt.exp()
    if divergence == "forward_kl":
        div = (pt * (log_pt - log_ps)).sum(-1)
    elif divergence == "reverse_kl":
        div = (ps * (log_ps - log_pt)).sum(-1)
    else:
        log_m = (0.3 * pt + 0.7 * ps).log()
        k_t, k_s = (pt * (log_pt - log_m)).sum(-1), (ps * (log_ps - log_m)).sum(-1)
        torch.testing.assert_close(loss.detach().double(), T * T * (0.3 * k_t + 0.7 * k_s),
                                   rtol=1e-5, atol=1e-6)
        div = k_s  # the signal: the student's half
    _check(sig, _want(log_pt, log_ps, None, div))
    if divergence != "jsd":
        torch.testing.assert_close(loss.detach().double(), T * T * div, rtol=1e-5, atol=1e-6)
    loss.sum().backward()  # the signals leave the loss's gradient alone
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tail", [False, True])
def test_topk_teacher(backend, device, tail):
    s, t = _case(device=device)
    values, idx = (t.log_softmax(-1) if tail else t).topk(5, -1)
    loss, sig = ptcore.kd_loss_topk(s, values, idx, temperature=T, tail_bucket=tail,
                                    return_row_signals=True)
    v = values.double()
    if tail:  # the mass the K log-probabilities leave is one more bin, tempered with them
        v = torch.cat([v, (1 - v.exp().sum(-1, keepdim=True)).log()], -1)
    log_q = (v / T).log_softmax(-1)
    log_ps = (s.double() / T).log_softmax(-1)
    on_t = log_ps.gather(-1, idx)
    if tail:
        on_t = torch.cat([on_t, (1 - on_t.exp().sum(-1, keepdim=True)).log()], -1)
    _check(sig, _want(log_q, log_ps, on_t, None))
    assert loss.shape == ()


def test_leading_dims_are_kept_and_empty_rows_work(backend):
    s, t = _case(n=6)
    _, sig = ptcore.kd_loss(s.reshape(2, 3, -1), t.reshape(2, 3, -1), return_row_signals=True)
    assert all(x.shape == (2, 3) for x in sig)
    _, sig = ptcore.kd_loss_topk(s[:0], t[:0, :3], torch.zeros(0, 3, dtype=torch.long),
                                 return_row_signals=True)
    assert all(x.shape == (0,) for x in sig)
