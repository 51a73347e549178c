"""ptcore.kd_loss_topk against its reference and against kd_loss with a masked teacher."""
import math

import pytest
import torch

import ptcore
from ptcore import reference

from tests.helpers import DEVICES, TOL, loss_tol, requires_native


def _case(n, v, k, dtype, device, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, v, generator=g) * scale).to(dtype).to(device)
    t = torch.randn(n, v, generator=g) * scale
    values, indices = t.topk(k, dim=-1)
    return s, t.to(device), values.to(device), indices.to(device)


def _run(fn, s, *args, grad_out=None, **kw):
    x = s.detach().clone().requires_grad_()
    loss = fn(x, *args, **kw)
    (loss * (torch.ones_like(loss) if grad_out is None else grad_out)).sum().backward()
    return loss.detach().double().cpu(), x.grad.double().cpu()


def _assert_match(s, values, indices, **kw):
    """ptcore against the reference run in float64 on the CPU, on the same inputs."""
    l1, g1 = _run(ptcore.kd_loss_topk, s, values, indices, **kw)
    cpu = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    l2, g2 = _run(reference.kd_loss_topk, s.double().cpu(), values.double().cpu(), indices.cpu(),
                  **cpu)
    torch.testing.assert_close(l1, l2, rtol=loss_tol(s.dtype)[0], atol=loss_tol(s.dtype)[1])
    rtol, atol = TOL[s.dtype]
    torch.testing.assert_close(g1, g2, rtol=rtol, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,v,k", [(1, 1, 1), (3, 1000, 8), (37, 5003, 64), (5, 300, 300)])
def test_matches_reference(device, n, v, k):
    for dtype in (torch.float32, torch.bfloat16, torch.float16) + \
            ((torch.float64,) if device == "cpu" else ()):
        s, _, values, indices = _case(n, v, k, dtype, device)
        _assert_match(s, values, indices, temperature=2.0, reduction="sum")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_equals_kd_loss_with_the_rest_of_the_teacher_masked(device, temperature):
    s, t, values, indices = _case(6, 200, 10, torch.float32, device)
    masked = torch.full_like(t, -math.inf).scatter(-1, indices, values)
    labels = torch.tensor([3, -100, 150, indices[3, 0].item(), 7, 199], device=device)
    kw = dict(temperature=temperature, labels=labels, hard_weight=0.3, reduction="none")
    l1, g1 = _run(ptcore.kd_loss_topk, s, values, indices, **kw)
    l2, g2 = _run(ptcore.kd_loss, s, masked, **kw)
    torch.testing.assert_close(l1, l2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_all_classes_kept_is_kd_loss(device):
    s, t, values, indices = _case(4, 50, 50, torch.float32, device)
    torch.testing.assert_close(ptcore.kd_loss_topk(s, values, indices, temperature=3.0),
                               ptcore.kd_loss(s, t, temperature=3.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean", "mean"])
def test_reductions_labels_and_grad_output(device, reduction):
    s, _, values, indices = _case(2 * 3, 40, 5, torch.float32, device)
    s, values, indices = s.reshape(2, 3, 40), values.reshape(2, 3, 5), indices.reshape(2, 3, 5)
    labels = torch.tensor([[1, -1, 3], [39, 0, -1]], device=device)
    grad_out = torch.randn(2, 3, device=device) if reduction == "none" else None
    _assert_match(s, values, indices, reduction=reduction, labels=labels, ignore_index=-1,
                  hard_weight=0.5, soft_weight=0.7, temperature=2.5, grad_out=grad_out)


@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_values_and_empty_batch(device):
    s, _, values, indices = _case(3, 64, 4, torch.float32, device)
    torch.testing.assert_close(ptcore.kd_loss_topk(s, values.half(), indices),
                               ptcore.kd_loss_topk(s, values.half().float(), indices))
    out = ptcore.kd_loss_topk(s[:0], values[:0], indices[:0])
    assert out.item() == 0.0


@requires_native
def test_gradcheck_and_opcheck():
    s, _, values, indices = _case(3, 9, 4, torch.float64, "cpu")
    s.requires_grad_()
    labels = torch.tensor([0, -100, 8])
    # nondet_tol: the repeated backward recomputes from the statistics (see test_kd_loss).
    assert torch.autograd.gradcheck(
        lambda x: ptcore.kd_loss_topk(x, values, indices, temperature=1.3, labels=labels,
                                      hard_weight=0.4, reduction="none"), (s,), nondet_tol=1e-12)
    for device in DEVICES:
        s32, _, v32, i32 = _case(4, 33, 6, torch.float32, device)
        lab = torch.tensor([1, 2, -100, 4], device=device)
        torch.library.opcheck(torch.ops.ptcore.kd_loss_topk_rows.default,
                              (s32.requires_grad_(), v32, i32, lab, 2.0, 0.5, 1.0, -100, True))


@requires_native
def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    s, _, values, indices = _case(8, 50, 5, torch.float32, "cpu")
    fn = lambda x: ptcore.kd_loss_topk(x, values, indices, temperature=2.0)  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    l1, g1 = _run(lambda x: fn(x), s)
    l2, g2 = _run(lambda x: compiled(x), s)
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(g1, g2)


class TestErrors:
    s, _, values, indices = _case(2, 10, 3, torch.float32, "cpu")

    def test_indices(self):
        bad = self.indices.clone()
        bad[1, 2] = bad[1, 0]
        with pytest.raises(ValueError, match="repeat"):
            ptcore.kd_loss_topk(self.s, self.values, bad)
        bad[1, 2] = 10
        with pytest.raises(ValueError, match=r"\[0, 10\)"):
            ptcore.kd_loss_topk(self.s, self.values, bad)
        with pytest.raises(TypeError, match="int64"):
            ptcore.kd_loss_topk(self.s, self.values, self.indices.int())

    def test_shapes(self):
        with pytest.raises(ValueError, match="same shape"):
            ptcore.kd_loss_topk(self.s, self.values, self.indices[:, :2])
        with pytest.raises(ValueError, match="leading shape"):
            ptcore.kd_loss_topk(self.s, self.values[:1], self.indices[:1])
        big_v = torch.zeros(2, 11)
        with pytest.raises(ValueError, match="K=11"):
            ptcore.kd_loss_topk(self.s, big_v, torch.arange(11).repeat(2, 1))

    def test_hyperparameters(self):
        with pytest.raises(ValueError, match="temperature"):
            ptcore.kd_loss_topk(self.s, self.values, self.indices, temperature=-1.0)
        with pytest.raises(ValueError, match="reduction"):
            ptcore.kd_loss_topk(self.s, self.values, self.indices, reduction="avg")
        with pytest.raises(ValueError, match="labels must be in"):
            ptcore.kd_loss_topk(self.s, self.values, self.indices, labels=torch.tensor([0, 10]),
                                hard_weight=1.0)

    @requires_native
    def test_native_op_checks(self):
        op = torch.ops.ptcore.kd_loss_topk_rows
        with pytest.raises(ValueError, match="K=11"):
            op(self.s, torch.zeros(2, 11), torch.zeros(2, 11, dtype=torch.long), None, 1.0, 0.0,
               1.0, -100, True)
        dup = torch.zeros(2, 3, dtype=torch.long)
        with pytest.raises(ValueError, match="repeat"):
            op(self.s, self.values, dup, None, 1.0, 0.0, 1.0, -100, True)
