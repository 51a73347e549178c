"""ptcore.ops.quantize_rows / gather_rows against ptcore.reference, on CPU (and CUDA)."""
import pytest
import torch

from ptcore import has_native, ops, reference

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
FLOATS = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 1), (3, 1000), (37, 50), (5, 13), (0, 8), (4, 0)]

pytestmark = pytest.mark.skipif(not has_native(), reason="native library not built")


def _features(m, d, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Rows of very different magnitude: each row must get its own scale.
    x = torch.randn(m, d, generator=g) * torch.logspace(-3, 3, max(m, 1))[:m, None]
    return x.to(device=device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_quantize_matches_reference(device, dtype, shape):
    x = _features(*shape, dtype, device)
    codes, scales = ops.quantize_rows(x)
    ref_codes, ref_scales = reference.quantize_rows(x.cpu())
    assert codes.dtype == torch.int8 and scales.dtype == torch.float32
    assert torch.equal(codes.cpu(), ref_codes)
    assert torch.equal(scales.cpu(), ref_scales)


@pytest.mark.parametrize("device", DEVICES)
def test_quantize_error_within_half_step(device):
    x = _features(64, 300, torch.float32, device)
    codes, scales = ops.quantize_rows(x)
    err = (codes.float() * scales[:, None] - x).abs()
    assert bool((err <= scales[:, None] / 2 * (1 + 1e-6)).all())
    assert int(codes.abs().max()) == 127  # each row's max reaches the full range


@pytest.mark.parametrize("device", DEVICES)
def test_quantize_zero_and_non_finite_rows(device):
    x = torch.randn(4, 37, device=device)
    x[0] = 0
    x[1, 5] = float("inf")
    x[2, 36] = float("nan")  # in the tail, past the last full vector
    codes, scales = ops.quantize_rows(x)
    assert scales[0] == 0 and scales[1] == float("inf") and bool(scales[2].isnan())
    assert not bool(codes[:3].any())
    assert bool(scales[3] > 0)
    deq = ops.gather_rows(codes, scales, torch.arange(4, device=device))
    assert not bool(deq[0].any()) and bool(deq[1:3].isnan().all())


def _store(kind, m, d, device):
    x = _features(m, d, torch.float32, device, seed=1)
    if kind == torch.int8:
        return ops.quantize_rows(x)
    return x.to(kind), None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", [torch.int8] + FLOATS)
@pytest.mark.parametrize("out_dtype", FLOATS)
@pytest.mark.parametrize("d", [1, 13, 64, 1000])
def test_gather_matches_reference(device, kind, out_dtype, d):
    store, scales = _store(kind, 20, d, device)
    idx = torch.tensor([3, 0, 19, 3, 3, 7], device=device)  # duplicates included
    out = ops.gather_rows(store, scales, idx, out_dtype)
    ref = reference.gather_rows(store.cpu(), None if scales is None else scales.cpu(),
                                idx.cpu(), out_dtype)
    assert out.dtype == out_dtype and out.shape == (6, d) and out.device == store.device
    assert torch.equal(out.cpu(), ref)


@pytest.mark.parametrize("device", DEVICES)
def test_gather_float32_exact_and_empty(device):
    store = _features(9, 33, torch.float32, device)
    idx = torch.tensor([8, 1, 1], device=device)
    assert torch.equal(ops.gather_rows(store, None, idx), store[idx])
    empty = ops.gather_rows(store, None, idx[:0], torch.float16)
    assert empty.shape == (0, 33) and empty.dtype == torch.float16
    assert ops.gather_rows(store[:0], None, idx[:0]).shape == (0, 33)


def test_gather_non_contiguous_indices():
    store = _features(10, 24, torch.float32, "cpu")
    idx = torch.tensor([[1, 2], [3, 4], [5, 6]])[:, 1]  # stride 2
    assert torch.equal(ops.gather_rows(store, None, idx), store[idx])


@pytest.mark.parametrize("bad", [-1, 10, 2**40])
def test_gather_rejects_out_of_range_on_cpu(bad):
    codes, scales = ops.quantize_rows(torch.randn(10, 8))
    with pytest.raises(IndexError, match=rf"indices\[1\] = {bad} is out of range"):
        ops.gather_rows(codes, scales, torch.tensor([0, bad, 3]))


def test_gather_argument_checks():
    x = torch.randn(6, 8)
    codes, scales = ops.quantize_rows(x)
    idx = torch.tensor([0, 1])
    cases = [
        (lambda: ops.gather_rows(codes, None, idx), ValueError, "scales are required"),
        (lambda: ops.gather_rows(x, scales, idx), ValueError, "scales must be None"),
        (lambda: ops.gather_rows(codes, scales.double(), idx), TypeError, "scales must be float32"),
        (lambda: ops.gather_rows(codes, scales[:5], idx), ValueError, "one entry per store row"),
        (lambda: ops.gather_rows(codes, scales, idx.int()), TypeError, "indices must be int64"),
        (lambda: ops.gather_rows(codes, scales, idx[None]), ValueError, "indices must be 1-D"),
        (lambda: ops.gather_rows(x.t(), None, idx), ValueError, "store must be contiguous"),
        (lambda: ops.gather_rows(x[None], None, idx), ValueError, "store must be 2-D"),
        (lambda: ops.gather_rows(x.double(), None, idx), TypeError, "store must be int8"),
        (lambda: ops.gather_rows(x, None, idx, torch.int32), TypeError, "dtype must be float32"),
        (lambda: ops.quantize_rows(x[None]), ValueError, "x must be 2-D"),
        (lambda: ops.quantize_rows(x.double()), TypeError, "x must be float32"),
    ]
    for call, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            call()


@CUDA
def test_gather_rejects_mixed_devices():
    store = torch.randn(4, 8, device="cuda")
    with pytest.raises(RuntimeError, match="indices must be on cuda"):
        ops.gather_rows(store, None, torch.tensor([0]))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = _features(7, 40, torch.float32, device)
    torch.library.opcheck(torch.ops.ptcore.quantize_rows.default, (x,))
    codes, scales = ops.quantize_rows(x)
    idx = torch.tensor([6, 0, 0], device=device)
    torch.library.opcheck(torch.ops.ptcore.gather_rows.default,
                          (codes, scales, idx, torch.bfloat16))
    torch.library.opcheck(torch.ops.ptcore.gather_rows.default,
                          (x.half(), None, idx, torch.float32))
