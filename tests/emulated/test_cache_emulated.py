"""The feature cache's CUDA kernels, emulated: int8 row quantization and the fused gather +
dequantize, on both load widths (16-byte packs when rows allow, one element otherwise), every
store and output dtype, into a caller's `out` (aligned or not), with bad indices; against
the reference (the same float32 operations: exactly) and the CPU kernels, under every seed."""
import math

import pytest
import torch

import ptcore
from ptcore import reference

from tests.helpers import requires_native

SEEDS = (0, 1, 2, 3)
FLOATS = [torch.float32, torch.float16, torch.bfloat16]


def _x(m, d, dtype, seed=0):
    """Rows of mixed scale, with an all-zero row, a NaN row, an inf row and a huge row."""
    g = torch.Generator().manual_seed(seed + m * 31 + d)
    x = torch.randn(m, d, generator=g) * torch.logspace(-3, 3, m)[:, None]
    if m >= 4:
        x[0] = 0
        x[1, d // 2] = math.nan
        x[2, 0] = math.inf
        x[3] *= 1e30 if dtype == torch.float32 else 1
    return x.to(dtype)


# (M, D, offset in elements): D a multiple of every pack (16-byte loads) or not; rows at an
# offset (element loads); one column.
QUANT = [(9, 64, 0), (6, 66, 0), (5, 1000, 0), (4, 64, 1), (7, 1, 0), (0, 8, 0)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("m,d,offset", QUANT, ids=[f"{m}x{d}-off{o}" for m, d, o in QUANT])
def test_quantize_rows_emulated(emu, m, d, offset, dtype, seed):
    x = _x(m, d, dtype)
    if offset:
        x = torch.cat([torch.zeros(offset, dtype=dtype), x.flatten()])[offset:].view(m, d)
    emu.configure(seed)
    codes, scales = emu.quantize_rows(x)
    want_codes, want_scales = reference.quantize_rows(x)
    torch.testing.assert_close(scales, want_scales, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(codes, want_codes, rtol=0, atol=0)
    if ptcore.has_native():
        cpu_codes, cpu_scales = torch.ops.ptcore.quantize_rows(x)
        torch.testing.assert_close(codes, cpu_codes, rtol=0, atol=0)
        torch.testing.assert_close(scales, cpu_scales, rtol=0, atol=0, equal_nan=True)


def _store(kind, m, d):
    x = _x(m, d, torch.float32, seed=1)
    if kind == "int8":
        codes, scales = reference.quantize_rows(x)
        return codes, scales
    return x.to(kind), None


STORES = ["int8", torch.float32, torch.float16, torch.bfloat16]
# (M, D): D a multiple of every pack, or not, or one column
GATHER = [(10, 64), (6, 67), (5, 1)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("out_offset", [None, 0, 1], ids=["new", "out", "out-off1"])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("store_kind", STORES,
                         ids=lambda k: k if isinstance(k, str) else str(k)[6:])
@pytest.mark.parametrize("m,d", GATHER, ids=[f"{m}x{d}" for m, d in GATHER])
def test_gather_rows_emulated(emu, m, d, store_kind, dtype, out_offset, seed):
    store, scales = _store(store_kind, m, d)
    indices = torch.tensor([m - 1, 0, 2, 2, m - 1, 1, 0])
    want = reference.gather_rows(store, scales, indices, dtype)
    emu.configure(seed)
    if out_offset is None:
        got = emu.gather_rows(store, scales, indices, dtype)
    else:
        buf = torch.zeros(indices.numel() * d + out_offset, dtype=dtype)
        got = buf[out_offset:].view(indices.numel(), d)
        emu.gather_rows_out(store, scales, indices, dtype, got)
        assert (buf[:out_offset] == 0).all()
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    if ptcore.has_native():
        cpu = torch.ops.ptcore.gather_rows(store, scales, indices, dtype)
        torch.testing.assert_close(got, cpu, rtol=0, atol=0, equal_nan=True)


@requires_native
@pytest.mark.parametrize("bad", [[0, 4, 5, 1], [0, -1], [-7, 3, 9]])
def test_gather_bad_index_raises_what_the_cpu_raises(emu, bad):
    store = torch.randn(5, 16)
    emu.configure(1)
    with pytest.raises(IndexError) as got:
        emu.gather_rows(store, None, torch.tensor(bad), torch.float32)
    with pytest.raises(IndexError) as cpu:
        torch.ops.ptcore.gather_rows(store, None, torch.tensor(bad), torch.float32)
    assert str(got.value).splitlines()[0] == str(cpu.value).splitlines()[0]


def test_gather_unchecked_bad_index_gives_a_nan_row_and_reads_nothing(emu):
    """With the input checks off, a bad index is never read: its output row is NaN."""
    store = torch.randn(5, 16)
    emu.configure(2)
    previous = emu.set_input_checks(False)
    try:
        got = emu.gather_rows(store, None, torch.tensor([1, 5, -1, 4]), torch.float32)
    finally:
        emu.set_input_checks(previous)
    torch.testing.assert_close(got[[0, 3]], store[[1, 4]], rtol=0, atol=0)
    assert torch.isnan(got[[1, 2]]).all()
