"""ptcore.fused_linear_kd_loss's other teachers and options against float64 references:
a dense soft-label target, the cosine loss, heads padded beyond the vocabulary, the soft
and hard parts, and float32 logits out of half-precision matmuls."""
import pytest
import torch
import torch.nn.functional as F

import ptcore

from tests.helpers import requires_native
from tests.ops.test_fused_linear_kd import IGN, _assert_close, _case, _grads, _reference64

f = ptcore.fused_linear_kd_loss


def _dense(n, v, seed=0, zeros=True):
    """[n, v] probabilities with some exact zeros (masked classes)."""
    g = torch.Generator().manual_seed(seed)
    p = (torch.randn(n, v, generator=g) * 2).softmax(-1)
    if zeros:
        p[:, ::7] = 0
        p = p / p.sum(-1, keepdim=True)
    return p


@requires_native
@pytest.mark.parametrize("form", ["probs", "log_probs"])
@pytest.mark.parametrize("opts", [dict(temperature=1.0), dict(temperature=2.0, hard_weight=0.5),
                                  dict(temperature=0.8, divergence="jsd", reduction="sum")])
def test_dense_target_matches_float64(form, opts):
    x, w, b, _, lab = _case(23, 16, 90, labels=True)
    p = _dense(23, 90)
    teacher = {"teacher_probs": p} if form == "probs" else {"teacher_log_probs": p.log()}
    kw = dict(opts, labels=lab)
    got = _grads(f, x, w, b, teacher, chunk_size=6, **kw)
    _assert_close(got, _reference64(x, w, b, teacher, **kw), 1e-5, 1e-6)
    if opts["temperature"] == 1.0:  # written out: Σ p (log p - log softmax(s)), zeros count 0
        s = (x.double() @ w.double().T + b.double()).log_softmax(-1)
        pd = p.double()
        rows = (pd * (pd.clamp_min(1e-300).log() - s)).sum(-1)
        want = rows[lab != IGN].mean()
        torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-6)


@requires_native
def test_dense_target_gradcheck_and_refusals():
    x, w, b, _, lab = _case(5, 3, 7, dtype=torch.float64, labels=True)
    p = _dense(5, 7, zeros=False).double()
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    assert torch.autograd.gradcheck(
        lambda *a: f(*a, teacher_probs=p, labels=lab, hard_weight=0.3, temperature=1.7,
                     chunk_size=2), leaves)
    with pytest.raises(ValueError, match=r"teacher_probs must be \[5, 7\]"):
        f(x, w, b, teacher_probs=p[:, :6])
    with pytest.raises(ValueError, match="not both"):
        f(x, w, b, teacher_probs=p, teacher_log_probs=p.log())
    with pytest.raises(ValueError, match="either"):
        f(x, w, b, teacher_probs=p, teacher_values=p[:, :2], teacher_indices=torch.zeros(
            5, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="teacher_probs"):
        f(x, w, b, teacher_probs=p.long())


@requires_native
@pytest.mark.parametrize("teacher_form", ["full", "topk_tail", "dense", "cosine"])
@pytest.mark.parametrize("hard", [0.0, 0.7])
def test_parts_are_the_soft_and_hard_terms(teacher_form, hard):
    x, w, b, teacher, lab = _case(31, 12, 70, labels=True, k=5 if teacher_form == "topk_tail"
                                  else None, log_probs=True)
    kw = dict(labels=lab, temperature=2.0, hard_weight=hard, soft_weight=0.6,
              tail_bucket=teacher_form == "topk_tail", chunk_size=8)
    if teacher_form == "dense":
        teacher = {"teacher_probs": _dense(31, 70)}
    if teacher_form == "cosine":
        kw["divergence"] = "cosine"
    loss, parts = f(x, w, b, **teacher, return_parts=True, **kw)
    assert not parts["soft"].requires_grad and not parts["hard"].requires_grad
    torch.testing.assert_close(loss, 0.6 * parts["soft"] + hard * parts["hard"])
    kw64 = dict(kw, hard_weight=0.0, soft_weight=1.0)
    soft = _reference64(x, w, b, teacher, **kw64)[0]
    s = x.double() @ w.double().T + b.double()
    keep = lab != IGN
    ce = F.cross_entropy(s[keep], lab[keep])
    torch.testing.assert_close(parts["soft"].double(), soft, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(parts["hard"].double(), ce, rtol=1e-5, atol=1e-6)
    rows, rparts = f(x, w, b, **teacher, return_parts=True, **dict(kw, reduction="none"))
    assert rparts["hard"].shape == (31,) and not rparts["hard"][~keep].any()


@requires_native
def test_parts_without_labels_or_soft_weight_and_with_row_signals():
    x, w, b, teacher, lab = _case(9, 8, 40, labels=True)
    loss, parts = f(x, w, b, **teacher, return_parts=True)
    assert parts["hard"].item() == 0 and torch.equal(parts["soft"], loss)
    loss, sig, parts = f(x, w, b, **teacher, labels=lab, hard_weight=1.0, soft_weight=0.0,
                         return_row_signals=True, return_parts=True)
    assert parts["soft"].isnan() and torch.allclose(loss, parts["hard"])
    assert sig.divergence.shape == (9,)
    with pytest.raises(TypeError, match="return_parts"):
        f(x, w, b, **teacher, return_parts=1)


def _cosine64(x, w, b, th, tw, tb, lab, hard, soft):
    s = x.double() @ w.double().T + b.double()
    t = th.double() @ tw.double().T + tb.double()
    rows = soft * (1 - F.cosine_similarity(s, t, dim=-1))
    keep = lab != IGN
    rows = rows + hard * F.cross_entropy(s, lab.where(keep, 0), reduction="none")
    return rows[keep].mean()


@requires_native
def test_cosine_matches_the_written_out_loss_and_gradcheck():
    x, w, b, teacher, lab = _case(27, 12, 60, labels=True)
    kw = dict(labels=lab, divergence="cosine", hard_weight=0.4, soft_weight=0.8,
              temperature=3.0, chunk_size=5)
    got = _grads(f, x, w, b, teacher, **kw)
    want = _grads(lambda *a, **t: _cosine64(*a, t["teacher_hidden"], t["teacher_weight"],
                                            t["teacher_bias"], lab, 0.4, 0.8),
                  *(t.double() for t in (x, w, b)),
                  {k: v.double() for k, v in teacher.items()})
    _assert_close(got, want, 1e-5, 1e-6)
    _assert_close(got, _reference64(x, w, b, teacher, **kw), 1e-5, 1e-6)
    x, w, b, teacher, lab = _case(5, 3, 7, dtype=torch.float64, labels=True)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    assert torch.autograd.gradcheck(
        lambda *a: f(*a, **teacher, labels=lab, divergence="cosine", hard_weight=0.3,
                     chunk_size=2), leaves)


@requires_native
def test_cosine_refusals():
    x, w, b, teacher, _ = _case(4, 8, 30)
    topk = _case(4, 8, 30, k=3)[3]
    with pytest.raises(ValueError, match="cosine"):
        f(x, w, b, **topk, divergence="cosine")
    with pytest.raises(ValueError, match="cosine"):
        f(x, w, b, teacher_probs=_dense(4, 30), divergence="cosine")
    with pytest.raises(ValueError, match="row_signals"):
        f(x, w, b, **teacher, divergence="cosine", return_row_signals=True)
    with pytest.raises(ValueError, match="divergence"):
        f(x, w, b, **teacher, divergence="cosinus")


@requires_native
@pytest.mark.parametrize("divergence", ["forward_kl", "jsd", "cosine"])
def test_padded_heads_with_vocab_size(divergence):
    """The teacher padded 6 rows beyond vocab_size = 50, the student 4: the teacher's extra
    rows are dropped, the student's get a teacher probability 0 (a -inf logit)."""
    x, w, b, _, lab = _case(19, 10, 54, labels=True)
    g = torch.Generator().manual_seed(5)
    th, tw, tb = torch.randn(19, 14, generator=g), torch.randn(56, 14, generator=g) / 2, \
        torch.randn(56, generator=g)
    teacher = dict(teacher_hidden=th, teacher_weight=tw, teacher_bias=tb)
    kw = dict(labels=lab, hard_weight=0.5, temperature=1.5, divergence=divergence, vocab_size=50)
    got = _grads(f, x, w, b, teacher, chunk_size=7, **kw)
    _assert_close(got, _reference64(x, w, b, teacher, **kw), 1e-5, 1e-6)
    if divergence == "forward_kl":  # written out: the teacher's softmax over its first 50
        t = (th.double() @ tw.double().T + tb.double())[:, :50] / 1.5
        s = (x.double() @ w.double().T + b.double()) / 1.5
        lt, ls = t.log_softmax(-1), s.log_softmax(-1)[:, :50]
        soft = (lt.exp() * (lt - ls)).sum(-1) * 2.25
        hard = F.cross_entropy(s * 1.5, lab.where(lab != IGN, 0), reduction="none")
        want = (soft + 0.5 * hard)[lab != IGN].mean()
        torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-6)
        # The student's padded rows are pushed down: their gradient is their probability.
        assert (got[3][50:] > 0).all()
    # A dense target over the 50 real classes or the student's 54, the same loss.
    p = (th @ tw.T + tb)[:, :50].log_softmax(-1)
    if divergence != "cosine":
        a = f(x, w, b, teacher_log_probs=p, **kw)
        c = f(x, w, b, teacher_log_probs=F.pad(p, (0, 4), value=float("-inf")), **kw)
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(a.double(), got[0], rtol=1e-5, atol=1e-6)


@requires_native
def test_vocab_size_refusals():
    x, w, b, teacher, _ = _case(4, 8, 30)
    tw = torch.randn(34, teacher["teacher_weight"].shape[1])
    big = dict(teacher, teacher_weight=tw, teacher_bias=None)
    with pytest.raises(ValueError, match="pass vocab_size"):
        f(x, w, b, **big)
    f(x, w, b, **big, vocab_size=30)
    with pytest.raises(ValueError, match="fewer than vocab_size"):
        f(x, w, b, **dict(teacher, teacher_weight=tw[:20], teacher_bias=None), vocab_size=25)
    with pytest.raises(ValueError, match=r"vocab_size must be an int in \[1, 30\]"):
        f(x, w, b, **big, vocab_size=31)
    with pytest.raises(ValueError, match="infinite"):
        f(x, w, b, **big, vocab_size=28, divergence="reverse_kl")


@requires_native
@pytest.mark.parametrize("teacher_form", ["full", "topk"])
def test_fp32_logits_of_bfloat16_matmuls(teacher_form):
    """bfloat16 hidden states and weight: with fp32_logits the logits are the exact products
    summed in float32, so the loss is as accurate as float32's; without, each logit is
    rounded to bfloat16 (8 bits). The reference is float64 on the same bfloat16 values."""
    x, w, b, teacher, lab = _case(64, 48, 500, k=None if teacher_form == "full" else 20,
                                  labels=True)
    x, w, b = (t.to(torch.bfloat16) for t in (x, w, b))
    teacher = {n: t.to(torch.bfloat16) if t.is_floating_point() and n != "teacher_values"
               else t for n, t in teacher.items()}
    kw = dict(labels=lab, hard_weight=0.5, temperature=2.0)
    want = _reference64(x, w, b, teacher, **kw)
    errors = {}
    for flag in (False, True):
        got = _grads(f, x, w, b, teacher, chunk_size=16, fp32_logits=flag, **kw)
        assert got[1].dtype == torch.float64  # (cast by _grads) from bfloat16 gradients
        errors[flag] = abs(got[0].item() - want[0].item()) / want[0].item()
        for a, e in zip(got[1:], want[1:]):  # the gradients' matmuls stay bfloat16
            torch.testing.assert_close(a, e, rtol=3e-2, atol=1e-2 * e.abs().max().item())
    assert errors[True] < 1e-5 and errors[True] < errors[False] / 10, errors
    leaves = [t.float().requires_grad_() for t in (x, w, b)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = f(*leaves, **teacher, fp32_logits=True, **kw)
    loss.backward()
    assert abs(loss.item() - want[0].item()) / want[0].item() < 1e-5
    assert leaves[1].grad.dtype == torch.float32
    x32 = _case(8, 8, 30)
    torch.testing.assert_close(f(*x32[:3], **x32[3], fp32_logits=True), f(*x32[:3], **x32[3]),
                               rtol=0, atol=0)
    with pytest.raises(TypeError, match="fp32_logits"):
        f(*x32[:3], **x32[3], fp32_logits="yes")


@pytest.mark.parametrize("divergence", ["forward_kl", "cosine"])
def test_without_the_native_library(monkeypatch, divergence):
    from ptcore.ops import fused_linear_kd
    monkeypatch.setattr(fused_linear_kd, "has_native", lambda: False)
    x, w, b, teacher, lab = _case(9, 6, 20, labels=True)
    if divergence == "forward_kl":
        teacher = {"teacher_probs": _dense(9, 20)}
    kw = dict(labels=lab, hard_weight=0.5, temperature=2.0, divergence=divergence)
    got = _grads(f, x, w, b, teacher, chunk_size=4, **kw)
    _assert_close(got, _reference64(x, w, b, teacher, **kw), 1e-5, 1e-6)
    loss, parts = f(x, w, b, **teacher, return_parts=True, **kw)
    torch.testing.assert_close(loss, parts["soft"] + 0.5 * parts["hard"])
