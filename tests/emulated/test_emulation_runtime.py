"""The emulation catches what it exists to catch, on kernels written with those defects
(tests/emulated/emu/emu_selftest.cpp) and on ptcore's own kernels with unchecked data: a read
before a barrier, an access past a buffer, a warp collective some lanes never reach, a
barrier after an exit."""
import re

import pytest
import torch

from tests.helpers import requires_native

SEEDS = (0, 1, 2, 3)
# Under even seeds a buffer ends at its trailing guard page: a read one element past it faults.
# Under odd seeds it starts at its leading one, and past its end lie canary bytes (NaN), which
# catch writes (checked after each kernel) but let a read go through.
END_GUARD_SEEDS = (0, 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_missing_barrier_gives_wrong_results_and_the_barrier_right_ones(emu, seed):
    x = torch.arange(256, dtype=torch.float32)
    emu.configure(seed)
    torch.testing.assert_close(emu.run_selftest("neighbour_synced", x), x.roll(-1))
    assert not torch.equal(emu.run_selftest("neighbour", x), x.roll(-1))


@pytest.mark.parametrize("seed", END_GUARD_SEEDS)
def test_a_read_past_the_end_names_kernel_block_thread_and_index(emu, seed):
    emu.configure(seed)
    with pytest.raises(RuntimeError) as e:
        emu.run_selftest("past_end", torch.zeros(200))
    message = str(e.value)
    assert "out-of-bounds read" in message and "selftest::past_end_kernel" in message
    # Thread 7 of block 3 is element 199, whose x[200] is the first outside the buffer.
    assert "block (3,0,0), thread (7,0,0)" in message, message
    assert re.search(r"kernel argument 0 \[index 200\]", message), message


@pytest.mark.parametrize("seed", SEEDS)
def test_a_shuffle_half_the_warp_skips_fails_loudly(emu, seed):
    emu.configure(seed)
    with pytest.raises(RuntimeError, match="__shfl_xor_sync.*exited|exited.*__shfl_xor_sync"):
        emu.run_selftest("half_warp_shuffle", torch.zeros(64))


def test_a_barrier_after_an_exit_fails_loudly(emu):
    emu.configure(1)
    with pytest.raises(RuntimeError, match="__syncthreads.*exited|exited.*__syncthreads"):
        emu.run_selftest("exit_before_barrier", torch.zeros(64))


@requires_native
@pytest.mark.parametrize("seed", END_GUARD_SEEDS)
def test_unchecked_labels_read_out_of_bounds_in_ptcores_kernel(emu, seed):
    """With the input checks off, the last row's label V is read as a column: one element past
    the logits (an illegal address on a GPU). The guard page stops it and names the kernel."""
    s, t = torch.randn(3, 100), torch.randn(3, 100)
    labels = torch.tensor([0, 1, 100])
    emu.configure(seed)
    previous = emu.set_input_checks(False)
    try:
        with pytest.raises(RuntimeError, match=r"out-of-bounds read.*kd_forward_kernel<float, true>"
                                               r".*block \(2,0,0\), thread \(0,0,0\)"):
            emu.kd_loss_rows(s, t, labels, 1.0, "forward_kl", 0.5, 1.0, 1.0, -100, True, 1.0,
                             False)
    finally:
        emu.set_input_checks(previous)
    with pytest.raises(ValueError) as checked:
        emu.kd_loss_rows(s, t, labels, 1.0, "forward_kl", 0.5, 1.0, 1.0, -100, True, 1.0, False)
    with pytest.raises(ValueError) as cpu:
        torch.ops.ptcore.kd_loss_rows(s, t, labels, 1.0, "forward_kl", 0.5, 1.0, 1.0, -100, True,
                                      1.0, False)
    assert str(checked.value).splitlines()[0] == str(cpu.value).splitlines()[0]


def test_every_kernels_shared_memory_is_poisoned_between_blocks(emu):
    """The scheduler finds the kernels' __shared__ variables in the library's symbol tables;
    one missing would keep the previous block's values (a read before a write could pass)."""
    found = " ".join(emu.shared_variables())
    for kernel, variable in [("kd_forward_kernel", "smem_acc_raw"),
                             ("kd_forward_kernel", "smem_pair"),
                             ("kd_split_stats_kernel", "smem_acc_raw"),
                             ("kd_split_jsd_kernel", "smem_pair"),
                             ("kd_topk_forward_kernel", "smem_f"),
                             ("quantize_rows_kernel", "smem"),
                             ("neighbour_kernel", "smem")]:
        assert f"{kernel}" in found and f"::{variable}" in found, (kernel, variable)
