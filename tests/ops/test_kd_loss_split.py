"""ptcore.kd_loss on CUDA when one row is read by several blocks. csrc/cuda/kd_loss_kernel.cu
splits each row over blocks when the batch is too small to fill the GPU (N < 2 · SMs) and
rows are long (V >= 16384 in float32, 32768 in half types). Such rows must give what the
float64 reference gives, what one block per row gives (the same rows inside a batch big
enough not to split), and the same bits on every run: the forward with and without the
gradient it writes, and the backward."""

import pytest
import torch

from tests.helpers import requires_native
from tests.ops.split_cases import (DIVS, GRAD_RTOL, GRAD_SCALE, NS, VARIANTS, _args, _bits,
                                     _grad_atol, _inputs, _loss_atol, _reference)

pytestmark = [requires_native,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]

DEVICE = "cuda"
# (V, dtype, offset): V = 4097 is read by one block at every N (the control); 256000 by up
# to 31 blocks in float32, 15 in bfloat16 (8 values per 16-byte pack); 50257 starts one
# element into its buffer, so rows are misaligned (a scalar head, then packs; with the
# gradient, a fresh aligned tensor, every row is read element by element).
ROWS = [(4097, torch.float32, 0), (256000, torch.float32, 0), (256000, torch.bfloat16, 0),
        (50257, torch.float32, 1)]


def _sms():
    return torch.cuda.get_device_properties(0).multi_processor_count


def _place(x, dtype, offset, rows):
    """x at the head of a contiguous [rows, V] tensor on DEVICE (random rows after it) whose
    data starts `offset` elements into its buffer."""
    n, v = x.shape
    buf = torch.empty(rows * v + offset, dtype=dtype, device=DEVICE)
    out = buf[offset:].view(rows, v)
    out[:n] = x
    out[n:].normal_(0, 3, generator=torch.Generator(device=DEVICE).manual_seed(rows))
    return out


def _native(s, t, labels, div, dtype, offset, grad_rows, rows=None):
    """The ops' results for these n rows, on the CPU: rows and stats with the forward's
    gradient (for GRAD_SCALE on every row), rows and stats without it, the backward's
    gradient. With `rows`, the n rows run at the head of a batch of that many."""
    n = s.shape[0]
    rows = rows or n
    x, y = _place(s, dtype, offset, rows), _place(t, dtype, offset, rows)
    lab = None
    if labels is not None:
        lab = torch.zeros(rows, dtype=labels.dtype, device=DEVICE)
        lab[:n] = labels
    up = torch.ones(rows, device=DEVICE)
    up[:n] = grad_rows
    args = _args(div, labels)
    loss, stats, grad_f = torch.ops.ptcore.kd_loss_rows(x, y, lab, *args, GRAD_SCALE, True)
    loss0, stats0, _ = torch.ops.ptcore.kd_loss_rows(x, y, lab, *args, 1.0, False)
    grad_b = torch.ops.ptcore._kd_loss_rows_backward(up, x, y, lab, stats, *args)
    out = dict(rows=loss, stats=stats, grad_f=grad_f, rows0=loss0, stats0=stats0, grad_b=grad_b)
    return {k: r[:n].cpu() for k, r in out.items()}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("div", DIVS)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("v,dtype,offset", ROWS,
                         ids=[f"{v}-{str(d)[6:]}-offset{o}" for v, d, o in ROWS])
def test_split_rows_cuda(v, dtype, offset, n, div, variant):
    s, t, labels = _inputs(n, v, dtype, variant)
    grad_rows = torch.linspace(-1.5, 2.0, n, dtype=torch.float64)
    got = _native(s, t, labels, div, dtype, offset, grad_rows)

    ref_rows, ref_grad_f, ref_grad_b = _reference(s, t, labels, div, grad_rows)
    loss_atol = _loss_atol(s, t, labels)
    torch.testing.assert_close(got["rows"].double(), ref_rows, rtol=1e-5, atol=loss_atol,
                               equal_nan=True)
    for name, ref, up in (("grad_f", ref_grad_f, GRAD_SCALE), ("grad_b", ref_grad_b, 2.0)):
        torch.testing.assert_close(got[name].double(), ref, rtol=GRAD_RTOL[dtype],
                                   atol=_grad_atol(ref, s, t, labels, div, up, dtype),
                                   equal_nan=True, msg=name)

    # Without the gradient to write, the last pass runs one block per row: the same bits.
    assert torch.equal(_bits(got["rows0"]), _bits(got["rows"]))
    assert torch.equal(_bits(got["stats0"]), _bits(got["stats"]))

    # One block per row (a batch of 2 · SMs rows): the same values up to float32 summation
    # order.
    one = _native(s, t, labels, div, dtype, offset, grad_rows, rows=max(2 * _sms(), n))
    torch.testing.assert_close(got["rows"], one["rows"], rtol=1e-5, atol=loss_atol,
                               equal_nan=True)
    torch.testing.assert_close(got["stats"], one["stats"], rtol=1e-5, atol=1e-5, equal_nan=True)
    for name, ref, up in (("grad_f", ref_grad_f, GRAD_SCALE), ("grad_b", ref_grad_b, 2.0)):
        torch.testing.assert_close(got[name], one[name], rtol=GRAD_RTOL[dtype],
                                   atol=_grad_atol(ref, s, t, labels, div, up, dtype),
                                   equal_nan=True, msg=name)

    # Deterministic: a second run gives the same bits.
    again = _native(s, t, labels, div, dtype, offset, grad_rows)
    for name in got:
        assert torch.equal(_bits(again[name]), _bits(got[name])), name


def test_small_batches_read_a_row_with_several_blocks_cuda():
    """N = 8, V = 256000 runs the split kernels; a batch of 2 · SMs such rows does not."""
    def kernels(n):
        x = torch.randn(n, 256000, device=DEVICE)
        y = torch.randn_like(x)
        activities = [torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as prof:
            torch.ops.ptcore.kd_loss_rows(x, y, None, *_args("jsd", None), 1.0, True)
            torch.cuda.synchronize()
        return " ".join(e.key for e in prof.key_averages())

    small, big = kernels(8), kernels(2 * _sms())
    if "kd_" not in small + big:
        pytest.skip("the profiler recorded no CUDA kernels here")
    for name in ("kd_split_stats_kernel", "kd_split_jsd_kernel", "kd_split_finish_kernel"):
        assert name in small and name not in big, name
    assert "kd_forward_kernel" in big and "kd_forward_kernel" not in small
