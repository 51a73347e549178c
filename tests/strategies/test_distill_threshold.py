"""Distill's confidence threshold on unlabelled rows, read from the loss's own row signals:
the teacher's top probability at the distillation temperature T. Checked against float64
computations written here: at T = 1 the rows and the loss of the former separate softmax,
at T != 1 the tempered confidence; rejected rows get exactly zero gradient; the full, top-k
and DKD paths; and no other pass over the [N, V] logits runs."""
import functools
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ptcore.strategies.distill.dkd import dkd_term_loss
from ptcore.strategies.distill.kd import kd_term_loss
from test_distill_methods import reference_dkd

from tests.helpers import requires_native

N, V = 40, 10


def _case(seed=0, topk=None):
    """Student and teacher logits with a spread of teacher confidences, every third row
    unlabelled; the teacher as (logits,) or (top-k values, indices)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(N, V, generator=g) * 2
    t = torch.randn(N, V, generator=g) * torch.linspace(0.3, 12, N)[:, None]
    y = torch.randint(0, V, (N,), generator=g)
    y[::3] = -100
    return s, y, t, ((t,) if topk is None else t.topk(topk, -1))


def _want(s, y, teacher, T, soft, hard, threshold, conf_T):
    """Float64: mean over labelled rows and unlabelled rows whose teacher's top probability
    at temperature ``conf_T`` is at least ``threshold`` of soft·T²·KL + hard·CE."""
    s = s.double()
    if len(teacher) == 1:
        t = teacher[0].double()
    else:  # the kept classes only: the others get probability 0
        t = torch.full_like(s, float("-inf")).scatter(1, teacher[1], teacher[0].double())
    log_pt, log_ps = (t / T).log_softmax(-1), (s / T).log_softmax(-1)
    kl = torch.where(log_pt.isinf(), 0.0, log_pt.exp() * (log_pt - log_ps)).sum(-1)
    labelled = y != -100
    ce = -s.log_softmax(-1).gather(1, y.clamp_min(0)[:, None])[:, 0] * labelled
    confidence = (t / conf_T).softmax(-1).amax(-1)
    pseudo = ~labelled & (confidence >= threshold)
    counts = labelled | pseudo
    rows = (soft * T * T * kl + hard * ce) * counts
    return rows.sum() / counts.sum(), pseudo, confidence


def _run(s, y, teacher, T, threshold, **kw):
    out = kd_term_loss(s, y, teacher, temperature=T, soft_weight=0.7, hard_weight=0.4,
                       threshold=threshold, **kw)
    return out["loss"], out["pseudo"]


@pytest.mark.parametrize("topk", [None, 4])
@pytest.mark.parametrize("T", [1.0, 3.0])
def test_threshold_on_the_teacher_confidence_at_T(topk, T):
    """At T = 1 these are the rows (and the loss) of the former softmax(teacher).amax()."""
    s, y, t, teacher = _case(topk=topk)
    for threshold in (0.3, 0.6, 0.9):
        want, pseudo, confidence = _want(s, y, teacher, T, 0.7, 0.4, threshold, conf_T=T)
        assert (confidence - threshold).abs().min() > 1e-4  # no row on the edge
        assert 0 < int(pseudo.sum()) < int((y == -100).sum())  # the threshold matters
        loss, share = _run(s, y, teacher, T, threshold)
        torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)
        assert share.item() == pytest.approx(pseudo.double().mean().item())


def test_at_T_above_1_a_tempered_teacher_is_less_confident():
    """The documented change: a row whose teacher is sure at T = 1 but not at T = 4 drops."""
    s = torch.zeros(2, 3)
    t = torch.tensor([[6.0, 0, 0], [30.0, 0, 0]])  # top probability at T = 4: 0.69, 0.9989
    y = torch.tensor([-100, -100])
    assert torch.softmax(t[0], -1).amax() > 0.99
    out = kd_term_loss(s, y, (t,), temperature=4.0, soft_weight=1.0, hard_weight=0.0,
                       threshold=0.9)
    assert out["pseudo"].item() == 0.5


@pytest.mark.parametrize("form", ["full", "topk", "dkd"])
def test_rejected_rows_get_exactly_zero_gradient(form):
    s, y, t, teacher = _case(topk=4 if form == "topk" else None)
    T, threshold = 2.0, 0.6
    s = s.clone().requires_grad_()
    term = functools.partial(dkd_term_loss, alpha=1.0, beta=8.0) if form == "dkd" \
        else kd_term_loss
    out = term(s, y, teacher, temperature=T, soft_weight=1.0, hard_weight=0.5,
               threshold=threshold)
    out["loss"].backward()
    _, pseudo, _ = _want(s.detach(), y, teacher, T, 1.0, 0.5, threshold, conf_T=T)
    rejected = (y == -100) & ~pseudo
    assert rejected.sum() > 0 and pseudo.sum() > 0
    assert torch.equal(s.grad[rejected], torch.zeros_like(s.grad[rejected]))
    assert (s.grad[~rejected].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_dkd_threshold_on_the_teacher_s_top_class_probability(T):
    s, y, t, _ = _case()
    threshold = 0.5
    labelled = y != -100
    confident = (t.double() / T).softmax(-1).amax(-1) >= threshold
    counts = labelled | confident
    target = torch.where(labelled, y, t.argmax(-1))
    rows = counts.nonzero()[:, 0]
    want = (counts.sum() * reference_dkd(s[rows], t[rows], target[rows], T, 1.0, 8.0)
            + 0.5 * F.cross_entropy(s[labelled].double(), y[labelled], reduction="sum"))
    out = dkd_term_loss(s, y, (t,), temperature=T, soft_weight=1.0, hard_weight=0.5,
                        threshold=threshold, alpha=1.0, beta=8.0)
    torch.testing.assert_close(out["loss"].double(), want / counts.sum(), rtol=1e-5, atol=1e-6)
    assert out["pseudo"].item() == pytest.approx((~labelled & confident).double().mean().item())


def test_without_the_native_library_the_reference_gives_the_same_rows(monkeypatch):
    s, y, t, teacher = _case()
    native = _run(s, y, teacher, 3.0, 0.6)
    for name in ("ptcore.ops.kd_loss", "ptcore.ops.kd_loss_topk"):
        monkeypatch.setattr(sys.modules[name], "has_native", lambda: False)
    fallback = _run(s, y, teacher, 3.0, 0.6)
    torch.testing.assert_close(native, fallback)


class _Passes(TorchDispatchMode):
    """Records the ATen ops that read an [n, V] floating-point tensor."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        wide = [a for a in args if isinstance(a, torch.Tensor) and a.dim() == 2
                and a.shape[-1] == V and a.is_floating_point()]
        if wide:
            self.ops.append(func.name())
        return func(*args, **(kwargs or {}))


@requires_native
@pytest.mark.parametrize("topk", [None, 4])
def test_no_softmax_over_the_logits_besides_the_loss_kernel(topk):
    """By count: the threshold adds no op over the [N, V] logits; what reads them is the
    row indexing and the loss kernel itself, the same with and without the threshold."""
    s, y, t, teacher = _case(topk=topk)
    seen = {}
    for threshold in (None, 0.6):
        with _Passes() as passes:
            _run(s.clone().requires_grad_(), y, teacher, 2.0, threshold)[0].backward()
        seen[threshold] = sorted(passes.ops)
        assert not [op for op in passes.ops if "softmax" in op or "exp" in op
                    or "max" in op or "logsumexp" in op]
    assert seen[None] == seen[0.6]
    assert any(op.startswith("ptcore::kd_loss") for op in seen[0.6])
