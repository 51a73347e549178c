"""The KD ops' input-check kernels, emulated: every bad label or top-k row is found on the
device and raised as the CPU backend raises it (same exception, same first line), for K
below and above a block's threads; good data passes."""
import pytest
import torch

from tests.helpers import requires_native

pytestmark = requires_native


def _topk_call(ops, indices, labels=None):
    s = torch.randn(3, 300, generator=torch.Generator().manual_seed(0))
    i = torch.as_tensor(indices)
    v = torch.randn(i.shape, generator=torch.Generator().manual_seed(1))
    hard = 0.5 if labels is not None else 0.0
    lab = None if labels is None else torch.tensor(labels)
    return ops.kd_loss_topk_rows(s, v, i, lab, 1.0, hard, 1.0, -100, True, False, 1.0, False)


def _kd_call(ops, labels, hard):
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    return ops.kd_loss_rows(s, t, torch.tensor(labels), 1.0, "forward_kl", 0.5, hard, 1.0, -100,
                            True, 1.0, False)


def _repeat_k200():
    g = torch.Generator().manual_seed(3)
    rows = torch.stack([torch.randperm(290, generator=g)[:200] for _ in range(3)])
    rows[2, 150] = rows[2, 3]
    return rows


def _out_of_range(value, row, col):
    rows = torch.arange(8).repeat(3, 1)
    rows[row, col] = value
    return rows


BAD = {
    "label_too_big_soft_only": lambda ops: _kd_call(ops, [0, 1, 10, 2], 0.0),
    "label_too_big_hard": lambda ops: _kd_call(ops, [0, 1, 10, 2], 1.0),
    "label_negative": lambda ops: _kd_call(ops, [0, -3, 1, -100], 0.0),
    "topk_repeat_small_k": lambda ops: _topk_call(ops, [[1, 2, 3], [4, 4, 5], [6, 7, 8]]),
    "topk_repeat_k200": lambda ops: _topk_call(ops, _repeat_k200()),
    "topk_out_of_range": lambda ops: _topk_call(ops, _out_of_range(300, 1, 5)),
    "topk_negative": lambda ops: _topk_call(ops, _out_of_range(-1, 2, 0)),
    "topk_label_out_of_range": lambda ops: _topk_call(ops, torch.arange(24).reshape(3, 8),
                                                      [0, 300, 1]),
    "topk_bad_and_label_bad": lambda ops: _topk_call(ops, _out_of_range(300, 2, 7),
                                                     [0, 300, 1]),
}


@pytest.mark.parametrize("seed", (0, 1, 2, 3))
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_raises_what_the_cpu_raises(emu, name, seed):
    with pytest.raises(ValueError) as cpu:
        BAD[name](torch.ops.ptcore)
    emu.configure(seed)
    with pytest.raises(ValueError) as got:
        BAD[name](emu)
    assert str(got.value).splitlines()[0] == str(cpu.value).splitlines()[0]


def test_good_input_passes_the_checks(emu):
    emu.configure(1)
    emu.take_launches()
    _topk_call(emu, torch.arange(24).reshape(3, 8), [0, -100, 7])
    _kd_call(emu, [0, 9, -100, 3], 1.0)
    kernels = " ".join(emu.take_launches())
    assert "checks::bad_topk_kernel" in kernels and "checks::bad_labels_kernel" in kernels
