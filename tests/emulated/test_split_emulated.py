"""The full-teacher KD kernels when several blocks share a row (the split path), emulated on
devices of 132 SMs (an H100 or H200) and of 4 SMs, so that every branch of the split decision
runs at sizes the emulation can afford: one block per row because the batch fills the device
(N >= 2 · SMs) or because rows are short (V < 2 · 512 · 4 · pack), and several, as many as
the SMs ask for or as few as the row length allows. Each case is compared with the float64
reference, with the same rows read one block per row, and across thread orders bit for bit
(a row's parts are merged in index order: no schedule may change a bit)."""

import pytest
import torch

from ptcore import reference

from tests.helpers import requires_native
from tests.ops.split_cases import (DIVS, GRAD_RTOL, GRAD_SCALE, NS, VARIANTS, _args, _bits,
                                     _grad_atol, _inputs, _loss_atol, _reference)

pytestmark = requires_native

# (V, dtype, offset in elements): 4097 never splits (the control); 40000 float32 at most 4
# parts; 100003 bfloat16 at most 6 (8 values per pack); 50257 float32 one element into its
# buffer (a scalar head before the packs; at most 6 parts); 65537 float16 three elements in.
ROWS = [(4097, torch.float32, 0), (40000, torch.float32, 0), (100003, torch.bfloat16, 0),
        (50257, torch.float32, 1), (65537, torch.float16, 3)]
SMS = [132, 4]


def _expected_parts(n, v, dtype, sms):
    """docs/kernels.md: parts = min(⌈2 · SMs / N⌉, V / (512 threads · 4 packs · pack size))."""
    pack = 16 // torch.empty(0, dtype=dtype).element_size()
    return max(1, min(-(-2 * sms // n), v // (512 * 4 * pack)))


def _at_offset(x, dtype, offset, rows):
    """x at the head of a [rows, V] tensor (random rows after it) `offset` elements into its
    buffer."""
    n, v = x.shape
    buf = torch.empty(rows * v + offset, dtype=dtype)
    out = buf[offset:].view(rows, v)
    out.normal_(0, 3, generator=torch.Generator().manual_seed(rows))
    out[:n] = x.to(dtype)
    return out


def _run(emu, s, t, labels, div, dtype, offset, grad_rows, rows):
    """Forward with and without its gradient, and the backward, for the n rows at the head of
    a batch of `rows`; also the kernels launched."""
    n = s.shape[0]
    x, y = _at_offset(s, dtype, offset, rows), _at_offset(t, dtype, offset, rows)
    lab = None
    if labels is not None:
        lab = torch.zeros(rows, dtype=torch.long)
        lab[:n] = labels
    up = torch.ones(rows)
    up[:n] = grad_rows
    args = _args(div, labels)
    emu.take_launches()
    loss, stats, grad_f = emu.kd_loss_rows(x, y, lab, *args, GRAD_SCALE, True)
    loss0, stats0, _ = emu.kd_loss_rows(x, y, lab, *args, 1.0, False)
    grad_b = emu.kd_loss_rows_backward(up, x, y, lab, stats, *args)
    out = dict(rows=loss, stats=stats, grad_f=grad_f, rows0=loss0, stats0=stats0, grad_b=grad_b)
    return {k: r[:n] for k, r in out.items()}, emu.take_launches()


def _name(launch):
    """"kd_full::kd_forward_kernel<float, true> grid=(2,1,1) block=(512,1,1)" → its name."""
    return launch.split(" grid=")[0].split("<")[0].split("::")[-1]


def _grid(launch):
    return "grid=" + launch.split(" grid=")[1].split(" ")[0]


def _cases():
    """Every row shape × N × device; the nine divergence × input combinations in turn."""
    out = []
    for k, (v, dtype, offset) in enumerate(ROWS):
        for j, n in enumerate(NS):
            for i, sms in enumerate(SMS):
                combo = (k * 6 + j * 2 + i) % 9
                div, variant = DIVS[combo % 3], VARIANTS[combo // 3]
                out.append(pytest.param(v, dtype, offset, n, sms, div, variant,
                                        id=f"{v}-{str(dtype)[6:]}-off{offset}-n{n}-sms{sms}-"
                                           f"{div}-{variant}"))
    return out


@pytest.mark.parametrize("v,dtype,offset,n,sms,div,variant", _cases())
def test_split_rows_emulated(emu, v, dtype, offset, n, sms, div, variant):
    if variant == "mask" and n < 2:
        variant = "plain"  # a mask case needs row 1 (all masked)
    s, t, labels = _inputs(n, v, dtype, variant, seed=n * 7919 + v)
    grad_rows = torch.linspace(-1.5, 2.0, n, dtype=torch.float64)

    emu.configure(1, sms)
    got, launches = _run(emu, s, t, labels, div, dtype, offset, grad_rows, n)
    parts = _expected_parts(n, v, dtype, sms)
    kernels = [_name(x) + " " + _grid(x) for x in launches if "bad_labels" not in x]
    if parts == 1:
        one = f"grid=({n},1,1)"
        assert kernels == [f"kd_forward_kernel {one}"] * 2 + [f"kd_backward_kernel {one}"]
    else:
        grid = f"grid=({n},{parts},1)"
        passes = [f"kd_split_stats_kernel {grid}"]
        passes += [f"kd_split_jsd_kernel {grid}"] * (div == "jsd")
        assert kernels == (passes + [f"kd_split_finish_kernel {grid}"] + passes
                           + [f"kd_split_finish_kernel grid=({n},1,1)",
                              f"kd_backward_kernel {grid}"]), kernels

    ref_rows, ref_grad_f, ref_grad_b = _reference(s, t, labels, div, grad_rows)
    torch.testing.assert_close(got["rows"].double(), ref_rows, rtol=1e-5,
                               atol=_loss_atol(s, t, labels), equal_nan=True)
    for name, ref, up in (("grad_f", ref_grad_f, GRAD_SCALE), ("grad_b", ref_grad_b, 2.0)):
        torch.testing.assert_close(got[name].double(), ref, rtol=GRAD_RTOL[dtype],
                                   atol=_grad_atol(ref, s, t, labels, div, up, dtype),
                                   equal_nan=True, msg=lambda m: f"{name}: {m}")
    assert torch.equal(_bits(got["rows0"]), _bits(got["rows"]))
    assert torch.equal(_bits(got["stats0"]), _bits(got["stats"]))

    # Another thread and block order, poison and guard layout: the same bits.
    emu.configure(2, sms)
    again, _ = _run(emu, s, t, labels, div, dtype, offset, grad_rows, n)
    for name in got:
        assert torch.equal(_bits(again[name]), _bits(got[name])), name

    # One block per row (the rows in a batch that fills a device of one SM): the same values up
    # to float32 summation order.
    emu.configure(3, 1)
    one, launches = _run(emu, s, t, labels, div, dtype, offset, grad_rows, max(2, n))
    assert not [x for x in launches if "kd_split_" in x], launches
    torch.testing.assert_close(got["rows"], one["rows"], rtol=1e-5,
                               atol=_loss_atol(s, t, labels), equal_nan=True)
    for name, ref, up in (("grad_f", ref_grad_f, GRAD_SCALE), ("grad_b", ref_grad_b, 2.0)):
        torch.testing.assert_close(got[name], one[name], rtol=GRAD_RTOL[dtype],
                                   atol=_grad_atol(ref, s, t, labels, div, up, dtype),
                                   equal_nan=True, msg=lambda m: f"{name}: {m}")


def test_h100_batch_of_eight_long_rows_splits_in_31(emu):
    """docs/kernels.md's example: N = 8, V = 256000 float32 on 132 SMs takes 31 parts a row."""
    n, v = 8, 256000
    s, t, _ = _inputs(n, v, torch.float32, "plain", seed=n * 7919 + v)
    emu.configure(1, 132)
    emu.take_launches()
    rows, _, _ = emu.kd_loss_rows(s.float(), t.float(), None, *_args("forward_kl", None), 1.0,
                                  False)
    launches = emu.take_launches()
    assert [x.split(" grid=")[0] for x in launches] == [
        "kd_full::kd_split_stats_kernel<float, false>",
        "kd_full::kd_split_finish_kernel<float, false>"]
    assert "grid=(8,31,1) block=(512,1,1)" in launches[0] and "grid=(8,1,1)" in launches[1]
    ref = reference.kd_loss_rows(s, t, None, *_args("forward_kl", None))
    torch.testing.assert_close(rows.double(), ref, rtol=1e-5, atol=_loss_atol(s, t, None))
