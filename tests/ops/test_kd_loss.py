"""ptcore.kd_loss against its reference, gradients, registration, and every error path."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ptcore
from ptcore import reference

from tests.helpers import DEVICES, TOL, loss_tol, requires_native

DIVS = ["forward_kl", "reverse_kl", "jsd"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _dtypes(device):
    return [d for d in DTYPES if not (d == torch.float64 and device != "cpu")]


def _logits(n, v, dtype, device, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, v, generator=g) * scale).to(dtype).to(device)
    t = (torch.randn(n, v, generator=g) * scale).to(dtype).to(device)
    return s, t


def _both(s, t, grad_out=None, **kw):
    """Loss and student gradient from ptcore and from the reference run in float64 on the
    CPU (on the same rounded inputs), as float64 on CPU."""
    out = []
    for fn in (ptcore.kd_loss, reference.kd_loss):
        x = s.detach().clone()
        tt = t
        if fn is reference.kd_loss:
            x, tt = x.double().cpu(), t.double().cpu()
            kw = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
            grad_out = None if grad_out is None else grad_out.double().cpu()
        x.requires_grad_()
        loss = fn(x, tt, **kw)
        g = torch.ones_like(loss) if grad_out is None else grad_out
        (loss * g).sum().backward()
        out.append((loss.detach().double().cpu(), x.grad.double().cpu(), loss.dtype, x.grad.dtype))
    return out


def _assert_match(s, t, grad_out=None, **kw):
    (l1, g1, ld, gd), (l2, g2, _, _) = _both(s, t, grad_out, **kw)
    torch.testing.assert_close(l1, l2, rtol=loss_tol(s.dtype)[0], atol=loss_tol(s.dtype)[1])
    rtol, atol = TOL[s.dtype]
    torch.testing.assert_close(g1, g2, rtol=rtol, atol=atol)
    assert ld == (torch.float64 if s.dtype == torch.float64 else torch.float32)
    assert gd == s.dtype


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 1000), (37, 50257), (2, 3, 17)])
@pytest.mark.parametrize("divergence", DIVS)
def test_matches_reference_over_dtypes_and_shapes(device, shape, divergence):
    for dtype in _dtypes(device):
        s, t = _logits(math.prod(shape[:-1]), shape[-1], dtype, device)
        s, t = s.reshape(shape), t.reshape(shape)
        _assert_match(s, t, temperature=2.0, divergence=divergence, reduction="sum")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
@pytest.mark.parametrize("divergence", DIVS)
def test_temperatures(device, temperature, divergence):
    s, t = _logits(8, 333, torch.float32, device, scale=5.0)
    _assert_match(s, t, temperature=temperature, divergence=divergence, reduction="none")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean", "mean"])
def test_reductions_follow_kldivloss(device, reduction):
    s, t = _logits(6, 40, torch.float32, device)
    labels = torch.tensor([1, -100, 3, 39, -100, 0], device=device)
    _assert_match(s, t, reduction=reduction, labels=labels, hard_weight=0.3, temperature=3.0)
    # batchmean with T=1 and no labels is torch's own KLDivLoss(batchmean).
    expected = torch.nn.KLDivLoss(reduction="batchmean", log_target=True)(
        torch.log_softmax(s, -1), torch.log_softmax(t, -1))
    got = ptcore.kd_loss(s, t, reduction="batchmean")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_mean_divides_by_counted_rows_times_classes(device):
    s, t = _logits(4, 10, torch.float32, device)
    labels = torch.tensor([0, -100, 2, 3], device=device)
    rows = ptcore.kd_loss(s, t, labels=labels, reduction="none")
    assert rows[1].item() == 0.0
    torch.testing.assert_close(ptcore.kd_loss(s, t, labels=labels, reduction="mean"),
                               rows.sum() / (3 * 10))
    torch.testing.assert_close(ptcore.kd_loss(s, t, labels=labels, reduction="batchmean"),
                               rows.sum() / 3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("divergence", DIVS)
def test_grad_output_not_one(device, divergence):
    s, t = _logits(5, 77, torch.float32, device)
    g = torch.linspace(-2, 3, 5, device=device)
    _assert_match(s, t, grad_out=g, reduction="none", divergence=divergence, temperature=1.5,
                  labels=torch.tensor([0, 1, -100, 3, 76], device=device), hard_weight=0.7,
                  soft_weight=0.4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("divergence", DIVS)
def test_masked_vocabulary(device, divergence):
    s, t = _logits(4, 300, torch.float32, device)
    mask = torch.zeros(4, 300, dtype=torch.bool, device=device)
    mask[:, ::3] = True
    mask[1, :210] = True  # a long masked prefix: online maxima start at -inf
    s, t = s.masked_fill(mask, -math.inf), t.masked_fill(mask, -math.inf)
    (l1, g1, _, _), _ = _both(s, t, divergence=divergence, reduction="none", temperature=2.0)
    assert torch.isfinite(l1).all() and torch.isfinite(g1).all()
    assert (g1[mask.cpu()] == 0).all()
    _assert_match(s, t, divergence=divergence, reduction="none", temperature=2.0)


@pytest.mark.parametrize("device", DEVICES)
def test_teacher_mass_where_student_has_none_is_infinite(device):
    s = torch.tensor([[0.0, -math.inf]], device=device)
    t = torch.tensor([[0.0, 0.0]], device=device)
    assert ptcore.kd_loss(s, t).item() == math.inf


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("divergence", DIVS)
def test_huge_logits_do_not_overflow(device, divergence):
    # ±1e4: spread-out but non-degenerate distributions, checked against the reference.
    s = torch.tensor([[1e4, 1e4 - 1, -1e4, 0.0, 1e4 - 3]], device=device)
    t = torch.tensor([[1e4 - 0.5, 1e4, -1e4, 3.0, 1e4 - 2]], device=device)
    for temperature in (0.5, 1.0, 8.0):
        _assert_match(s, t, divergence=divergence, temperature=temperature, reduction="none")
    # ±3e38 (x / T alone would overflow for T < 1): p_s uniform, p_t on three classes.
    big = 3e38
    s = torch.full((1, 4), big, device=device)
    t = torch.tensor([[big, big, big, -big]], device=device)
    p_s, p_t = torch.full((4,), 0.25, dtype=torch.float64), torch.tensor([1 / 3] * 3 + [0.0],
                                                                          dtype=torch.float64)
    m = 0.5 * p_t + 0.5 * p_s
    kl = lambda p, q: float((p[p > 0] * (p[p > 0] / q[p > 0]).log()).sum())  # noqa: E731
    expected = {"forward_kl": kl(p_t, p_s), "reverse_kl": math.inf,
                "jsd": 0.5 * kl(p_t, m) + 0.5 * kl(p_s, m)}[divergence]
    for temperature in (0.5, 1.0, 8.0):
        x = s.clone().requires_grad_()
        loss = ptcore.kd_loss(x, t, divergence=divergence, temperature=temperature,
                              scale_by_t2=False)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        if math.isfinite(expected):
            loss.backward()
            assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("device", DEVICES)
def test_labels_and_ignore_index(device):
    s, t = _logits(6, 12, torch.float32, device)
    labels = torch.tensor([[0, 5, -1], [11, -1, 2]], device=device)
    s, t = s.reshape(2, 3, 12), t.reshape(2, 3, 12)
    kw = dict(labels=labels, ignore_index=-1, hard_weight=1.0, soft_weight=0.5, temperature=2.0)
    _assert_match(s, t, reduction="none", **kw)
    x = s.clone().requires_grad_()
    ptcore.kd_loss(x, t, reduction="sum", **kw).backward()
    assert (x.grad[labels == -1] == 0).all()
    assert (x.grad[labels != -1] != 0).any(dim=-1).all()
    # Only the hard term: equals cross entropy on the counted rows.
    ce = ptcore.kd_loss(s, t, labels=labels, ignore_index=-1, hard_weight=1.0, soft_weight=0.0,
                        reduction="batchmean")
    expected = torch.nn.functional.cross_entropy(s.reshape(6, 12), labels.reshape(6),
                                                 ignore_index=-1)
    torch.testing.assert_close(ce, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    s, t = _logits(64, 48, torch.float32, device)
    s_nc, t_nc = s.t(), t.t()[:, :]  # [48, 64]: rows are strided
    assert not s_nc.is_contiguous()
    _assert_match(s_nc, t_nc, temperature=2.0, divergence="jsd")
    _assert_match(s[:, ::2], t[:, ::2], temperature=2.0)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    s, t = _logits(0, 10, torch.float32, device)
    for reduction in ("sum", "batchmean", "mean"):
        out = ptcore.kd_loss(s, t, reduction=reduction)
        assert out.shape == () and out.item() == 0.0
    assert ptcore.kd_loss(s, t, reduction="none").shape == (0,)
    x = s.clone().requires_grad_()
    ptcore.kd_loss(x, t).backward()
    assert x.grad.shape == (0, 10)


def test_teacher_gets_no_gradient():
    s, t = _logits(3, 9, torch.float32, "cpu")
    t.requires_grad_()
    x = s.clone().requires_grad_()
    ptcore.kd_loss(x, t, temperature=2.0).backward()
    assert t.grad is None and x.grad is not None


def test_weights_and_temperature_follow_the_formula():
    s, t = _logits(5, 20, torch.float32, "cpu")
    labels = torch.arange(5)
    kl = ptcore.kd_loss(s, t, temperature=3.0, scale_by_t2=False)
    ce = torch.nn.functional.cross_entropy(s, labels)
    both = ptcore.kd_loss(s, t, temperature=3.0, labels=labels, soft_weight=0.25, hard_weight=2.0)
    torch.testing.assert_close(both, 0.25 * 9.0 * kl + 2.0 * ce, rtol=1e-5, atol=1e-5)


@requires_native
@pytest.mark.parametrize("divergence", DIVS)
def test_gradcheck_float64(divergence):
    s, t = _logits(4, 7, torch.float64, "cpu")
    s.requires_grad_()
    labels = torch.tensor([0, -100, 6, 2])
    for kw in (dict(), dict(labels=labels, hard_weight=0.5, soft_weight=2.0, scale_by_t2=False)):
        # nondet_tol: gradcheck's repeated backward recomputes the gradient from the saved
        # statistics (the first used the forward's); the two agree to float64 rounding.
        assert torch.autograd.gradcheck(
            lambda x: ptcore.kd_loss(x, t, temperature=1.7, divergence=divergence,
                                     reduction="none", **kw), (s,), nondet_tol=1e-12)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("divergence", DIVS)
def test_opcheck(device, divergence):
    s, t = _logits(5, 33, torch.float32, device)
    labels = torch.tensor([1, 2, -100, 4, 5], device=device)
    for lab, hard in ((None, 0.0), (labels, 0.5)):
        args = (s.clone().requires_grad_(), t, lab, 2.0, divergence, 0.4, hard, 1.0, -100, True)
        torch.library.opcheck(torch.ops.ptcore.kd_loss_rows.default, args)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    s, t = _logits(8, 50, torch.float32, device)
    labels = torch.arange(8, device=device)

    def step(x, y, lab):
        return ptcore.kd_loss(x, y, temperature=2.0, labels=lab, hard_weight=0.5)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    x1, x2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    l1, l2 = step(x1, t, labels), compiled(x2, t, labels)
    l1.backward()
    l2.backward()
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(x1.grad, x2.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_promotes_mixed_logits(device):
    layer = torch.nn.Linear(16, 10).to(device)
    x = torch.randn(4, 16, device=device)
    teacher = torch.randn(4, 10, device=device)
    dtype = torch.bfloat16
    with torch.autocast(device_type=device, dtype=dtype):
        student = layer(x)
        assert student.dtype == dtype
        loss = ptcore.kd_loss(student, teacher, temperature=2.0)
    assert loss.dtype == torch.float32
    loss.backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()
    expected = reference.kd_loss(student.float(), teacher, temperature=2.0)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 6), v=st.integers(1, 300), temperature=st.floats(0.3, 25.0),
       divergence=st.sampled_from(DIVS), scale=st.floats(0.0, 30.0),
       seed=st.integers(0, 2**16))
def test_property_random_shapes_and_temperatures(n, v, temperature, divergence, scale, seed):
    s, t = _logits(n, v, torch.float32, "cpu", scale=scale, seed=seed)
    (l1, g1, _, _), (l2, g2, _, _) = _both(s, t, temperature=temperature, divergence=divergence,
                                           reduction="none")
    # float32 against float64: the loss is a difference of terms of size log V + the logits'
    # range over T, times T² (its rounding is what float32 can deliver).
    magnitude = temperature ** 2 * (1 + math.log(v) + 8 * scale / temperature)
    # A divergence is never negative, up to that rounding: at T = 25, V = 10 and nearly
    # equal logits float32 gives -1.0e-4 where float64 gives 3.5e-5.
    assert (l1 >= -1e-6 * magnitude).all()
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6 * magnitude)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6 * magnitude / temperature)


class TestErrors:
    s, t = _logits(2, 5, torch.float32, "cpu")

    @pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan, math.inf])
    def test_bad_temperature(self, temperature):
        with pytest.raises(ValueError, match="temperature"):
            ptcore.kd_loss(self.s, self.t, temperature=temperature)

    def test_bad_names(self):
        with pytest.raises(ValueError, match="reduction"):
            ptcore.kd_loss(self.s, self.t, reduction="avg")
        with pytest.raises(ValueError, match="divergence"):
            ptcore.kd_loss(self.s, self.t, divergence="kl")

    @pytest.mark.parametrize("beta", [0.0, 1.0, -0.5, math.nan])
    def test_bad_beta(self, beta):
        with pytest.raises(ValueError, match="beta"):
            ptcore.kd_loss(self.s, self.t, divergence="jsd", beta=beta)

    @pytest.mark.parametrize("name", ["hard_weight", "soft_weight"])
    def test_bad_weights(self, name):
        with pytest.raises(ValueError, match=name):
            ptcore.kd_loss(self.s, self.t, **{name: -1.0})
        with pytest.raises(ValueError, match=name):
            ptcore.kd_loss(self.s, self.t, **{name: math.nan})

    def test_mismatched_inputs(self):
        with pytest.raises(ValueError, match="same shape"):
            ptcore.kd_loss(self.s, self.t[:, :4])
        with pytest.raises(TypeError, match="same dtype"):
            ptcore.kd_loss(self.s, self.t.double())
        with pytest.raises(ValueError, match="V >= 1"):
            ptcore.kd_loss(self.s[:, :0], self.t[:, :0])
        with pytest.raises(TypeError, match="torch.Tensor"):
            ptcore.kd_loss(self.s.tolist(), self.t)

    def test_integer_logits(self):
        with pytest.raises(TypeError, match="student_logits must be a floating"):
            ptcore.kd_loss(self.s.long(), self.t.long())

    def test_bad_labels(self):
        with pytest.raises(ValueError, match="labels must have"):
            ptcore.kd_loss(self.s, self.t, labels=torch.tensor([0, 1, 2]))
        with pytest.raises(TypeError, match="labels must be an integer"):
            ptcore.kd_loss(self.s, self.t, labels=torch.tensor([0.0, 1.0]))
        for bad in (5, -3):
            with pytest.raises(ValueError, match="labels must be in"):
                ptcore.kd_loss(self.s, self.t, labels=torch.tensor([0, bad]), hard_weight=1.0)

    @requires_native
    def test_native_op_checks_its_own_arguments(self):
        op = torch.ops.ptcore.kd_loss_rows
        with pytest.raises(ValueError, match="temperature"):
            op(self.s, self.t, None, 0.0, "forward_kl", 0.5, 0.0, 1.0, -100, True)
        with pytest.raises(ValueError, match="divergence"):
            op(self.s, self.t, None, 1.0, "kl", 0.5, 0.0, 1.0, -100, True)
        with pytest.raises(ValueError, match="2-D"):
            op(self.s[0], self.t[0], None, 1.0, "forward_kl", 0.5, 0.0, 1.0, -100, True)
        with pytest.raises(TypeError, match="same dtype"):
            op(self.s, self.t.half(), None, 1.0, "forward_kl", 0.5, 0.0, 1.0, -100, True)
        with pytest.raises(TypeError, match="float32, float16"):
            op(self.s.int(), self.t.int(), None, 1.0, "forward_kl", 0.5, 0.0, 1.0, -100, True)
        with pytest.raises(ValueError, match="labels must have 2 entries"):
            op(self.s, self.t, torch.zeros(3, dtype=torch.long), 1.0, "forward_kl", 0.5, 1.0,
               1.0, -100, True)


def test_module_matches_function_and_checks_early():
    s, t = _logits(3, 11, torch.float32, "cpu")
    labels = torch.tensor([1, 2, 3])
    mod = ptcore.nn.KDLoss(temperature=2.0, hard_weight=0.5, divergence="reverse_kl")
    torch.testing.assert_close(mod(s, t, labels),
                               ptcore.kd_loss(s, t, labels=labels, temperature=2.0,
                                              hard_weight=0.5, divergence="reverse_kl"))
    assert "temperature=2.0" in repr(mod)
    with pytest.raises(ValueError, match="temperature"):
        ptcore.nn.KDLoss(temperature=0)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean", "mean"])
def test_gradient_from_the_forward_under_every_upstream_scale(device, reduction):
    """The forward computes the gradient for the scale loss.backward() sends; any other
    scale (a weighted sum of losses, a GradScaler) is rescaled in the backward."""
    s, t = _logits(6, 70, torch.float32, device)
    labels = torch.tensor([1, -100, 3, 69, 0, -100], device=device)
    for weight in (1.0, 0.5, -3.0):
        for lab in (None, labels):
            kw = dict(reduction=reduction, temperature=2.0, labels=lab,
                      hard_weight=0.0 if lab is None else 0.4)
            g = torch.full((6,), weight, device=device) if reduction == "none" else \
                torch.tensor(weight, device=device)
            _assert_match(s, t, grad_out=g, **kw)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
def test_retain_graph_backward_twice(device):
    s, t = _logits(4, 50, torch.float32, device)
    x = s.clone().requires_grad_()
    loss = ptcore.kd_loss(x, t, temperature=2.0, divergence="jsd")
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()  # the forward's gradient was used: recomputed from the statistics
    torch.testing.assert_close(x.grad, 2 * first)


@requires_native
@pytest.mark.parametrize("device", DEVICES)
def test_forward_computes_the_gradient_only_when_autograd_wants_it(device):
    s, t = _logits(3, 40, torch.float32, device)
    args = (t, None, 2.0, "forward_kl", 0.5, 0.0, 1.0, -100, True)
    rows, stats, grad = torch.ops.ptcore.kd_loss_rows(s, *args, 1.0, False)
    assert grad.numel() == 0
    rows2, _, grad = torch.ops.ptcore.kd_loss_rows(s, *args, 0.25, True)
    assert grad.shape == s.shape and torch.equal(rows, rows2)
    x = s.clone().requires_grad_()
    reference.kd_loss(x, t, temperature=2.0, reduction="sum").backward()
    torch.testing.assert_close(grad, 0.25 * x.grad, rtol=1e-5, atol=1e-6)
    # Schema, fake kernel and dispatch with the gradient output. (Its autograd is checked by
    # test_opcheck: the backward consumes this output, rescaling it in place, by design.)
    torch.library.opcheck(torch.ops.ptcore.kd_loss_rows.default, (s, *args, 0.5, True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_backward_op_checks_the_device_of_grad_rows_and_stats():
    s, t = _logits(3, 40, torch.float32, "cuda")
    args = (t, None, 2.0, "forward_kl", 0.5, 0.0, 1.0, -100, True)
    rows, stats, _ = torch.ops.ptcore.kd_loss_rows(s, *args)
    for g, st, name in ((rows.cpu(), stats, "grad_rows"), (rows, stats.cpu(), "stats")):
        with pytest.raises(RuntimeError, match=f"{name} must be on cuda"):
            torch.ops.ptcore._kd_loss_rows_backward(g, s, t, None, st, *args[2:])
