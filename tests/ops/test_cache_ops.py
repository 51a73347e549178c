"""ptcore.ops.quantize_rows / gather_rows against ptcore.reference, on CPU (and CUDA)."""
import pytest
import torch

import ptcore
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


# ---------------------------------------------------------------- parallel rows, out=, checks
def _expected64(store, scales, idx):
    """Independent float64 reference: advanced indexing, dequantized in float64."""
    rows = store.cpu().double()[idx.cpu()]
    return rows * scales.cpu().double()[idx.cpu()][:, None] if scales is not None else rows


@pytest.fixture
def two_threads():
    """At least two torch threads, so the row chunks really run in parallel."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(2, before))
    yield
    torch.set_num_threads(before)


def _assert_rows(got, want64, dtype):
    if dtype == torch.float32:  # one correctly rounded product: exact
        assert torch.equal(got.cpu(), want64.float())
    else:
        rtol, atol = {torch.float16: (1e-3, 1e-5), torch.bfloat16: (8e-3, 1e-5)}[dtype]
        torch.testing.assert_close(got.cpu().double(), want64, rtol=rtol, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", [torch.int8, torch.float16, torch.float32])
@pytest.mark.parametrize("out_dtype", FLOATS)
def test_gather_many_rows_in_parallel(two_threads, device, kind, out_dtype):
    store, scales = _store(kind, 3000, 72, device)  # 72: a vector tail per row
    g = torch.Generator().manual_seed(kind.itemsize)
    idx = torch.randint(0, 3000, (5001,), generator=g).to(device)
    _assert_rows(ops.gather_rows(store, scales, idx, out_dtype), _expected64(store, scales, idx),
                 out_dtype)


@pytest.mark.parametrize("kind,out_dtype,d,offset", [
    (torch.int8, torch.float32, 1024, 0),     # 16 MiB out: streaming stores
    (torch.float16, torch.bfloat16, 2048, 0),
    (torch.float32, torch.float32, 1024, 0),  # a straight row copy, streamed
    (torch.int8, torch.float32, 1020, 0),     # rows not a multiple of 32 bytes: cached stores
    (torch.float32, torch.float32, 1024, 1),  # out not 32-byte aligned: cached stores
])
def test_gather_large_outputs(two_threads, kind, out_dtype, d, offset):
    store, scales = _store(kind, 1000, d, "cpu")
    b = (16 << 20) // (d * out_dtype.itemsize) + 3
    idx = torch.randint(0, 1000, (b,), generator=torch.Generator().manual_seed(d))
    out = torch.empty(b * d + offset, dtype=out_dtype)[offset:].view(b, d)
    ops.gather_rows(store, scales, idx, out=out)
    _assert_rows(out, _expected64(store, scales, idx), out_dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_quantize_many_rows_in_parallel(two_threads, device):
    x = _features(5000, 130, torch.float32, device, seed=3)
    codes, scales = ops.quantize_rows(x)
    x64 = x.cpu().double()
    amax = x64.abs().amax(dim=1)
    assert torch.equal(scales.cpu(), (amax.float() / 127))
    err = (codes.cpu().double() * scales.cpu().double()[:, None] - x64).abs()
    assert bool((err <= scales.cpu().double()[:, None] / 2 * (1 + 1e-6)).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", [torch.int8, torch.bfloat16])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
def test_gather_out_reused(device, kind, out_dtype):
    store, scales = _store(kind, 50, 40, device)
    out = torch.full((5, 40), float("nan"), dtype=out_dtype, device=device)
    ptr = out.data_ptr()
    for seed in (0, 1):  # the second gather leaves nothing of the first behind
        idx = torch.randint(0, 50, (5,), generator=torch.Generator().manual_seed(seed)).to(device)
        got = ops.gather_rows(store, scales, idx, out=out)  # dtype: out's
        assert got is out and out.data_ptr() == ptr and out.dtype == out_dtype
        _assert_rows(out, _expected64(store, scales, idx), out_dtype)
        assert torch.equal(out, ops.gather_rows(store, scales, idx, out_dtype))
    empty = torch.empty(0, 40, dtype=out_dtype, device=device)
    assert ops.gather_rows(store, scales, idx[:0], out=empty) is empty


@pytest.mark.parametrize("device", DEVICES)
def test_gather_out_checks(device):
    codes, scales = ops.quantize_rows(torch.randn(20, 8, device=device))
    idx = torch.tensor([0, 5, 19], device=device)
    f32 = dict(dtype=torch.float32, device=device)
    cases = [
        (torch.empty(4, 8, **f32), ValueError, r"out must have shape \[3, 8\]"),
        (torch.empty(3, 9, **f32), ValueError, r"out must have shape \[3, 8\]"),
        (torch.empty(24, **f32), ValueError, r"out must have shape \[3, 8\]"),
        (torch.empty(8, 3, **f32).t(), ValueError, "out must be contiguous"),
        (torch.empty(3, 16, **f32)[:, ::2], ValueError, "out must be contiguous"),
    ]
    for out, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            ops.gather_rows(codes, scales, idx, torch.float32, out=out)
    with pytest.raises(TypeError, match="out must be Half like dtype, got Float"):
        ops.gather_rows(codes, scales, idx, torch.float16, out=torch.empty(3, 8, **f32))
    with pytest.raises(TypeError, match="dtype must be float32"):
        ops.gather_rows(codes, scales, idx, out=torch.empty(3, 8, dtype=torch.int32, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_gather_out_must_not_alias_its_inputs(device):
    store = torch.randn(20, 8, device=device)
    idx = torch.tensor([4, 5, 6], device=device)
    with pytest.raises(ValueError, match="out must not overlap store"):
        ops.gather_rows(store, None, idx, out=store[5:8])  # would read rows it overwrote
    codes, scales = ops.quantize_rows(torch.randn(24, 1, device=device))
    with pytest.raises(ValueError, match="out must not overlap scales"):
        ops.gather_rows(codes, scales, idx, out=scales[:3].view(3, 1))
    buf = torch.zeros(16, dtype=torch.int64, device=device)
    buf[:3] = idx
    with pytest.raises(ValueError, match="out must not overlap indices"):
        ops.gather_rows(store, None, buf[:3], out=buf.view(torch.float32)[:24].view(3, 8))
    # Apart in one storage is fine.
    both = torch.randn(23, 8, device=device)
    ops.gather_rows(both[:20], None, idx, out=both[20:])
    assert torch.equal(both[20:], both[[4, 5, 6]])


@CUDA
def test_gather_out_wrong_device():
    store = torch.randn(4, 8, device="cuda")
    with pytest.raises(RuntimeError, match="out must be on cuda:0 like store, got cpu"):
        ops.gather_rows(store, None, torch.tensor([0], device="cuda"), out=torch.empty(1, 8))


def _bad_index_message(store, scales, idx):
    with pytest.raises(IndexError) as info:
        ops.gather_rows(store, scales, idx)
    return str(info.value).splitlines()[0]


def test_gather_names_first_bad_index_across_chunks(two_threads):
    codes, scales = ops.quantize_rows(torch.randn(10, 8))
    idx = torch.zeros(40_000, dtype=torch.int64)  # two threads: [0, 20000), [20000, 40000)
    # The second chunk meets its bad index first; the first chunk's, lower, must win.
    idx[20_001], idx[30_000], idx[19_999] = 10, -3, 2**40
    msg = _bad_index_message(codes, scales, idx)
    assert msg == ("indices[19999] = 1099511627776 is out of range for a store of 10 rows "
                   "(valid: 0 to 9; negative indices are not accepted)")
    with ptcore.input_checks(False):  # CPU checks regardless
        assert _bad_index_message(codes, scales, idx) == msg
    out = torch.zeros(40_000, 8)
    with pytest.raises(IndexError, match=r"indices\[19999\]"):
        ops.gather_rows(codes, scales, idx, out=out)


def test_reference_raises_the_same_index_error():
    codes, scales = ops.quantize_rows(torch.randn(10, 8))
    idx = torch.tensor([1, 2, -7, 10])
    with pytest.raises(IndexError) as info:
        reference.gather_rows(codes, scales, idx, torch.float32)
    assert str(info.value) == _bad_index_message(codes, scales, idx)


@CUDA
@pytest.mark.parametrize("bad", [-1, 10, 2**40])
@pytest.mark.parametrize("with_out", [False, True])
def test_gather_cuda_raises_what_cpu_raises(bad, with_out):
    codes, scales = ops.quantize_rows(torch.randn(10, 8))
    idx = torch.tensor([0, 3, bad, 3, bad])
    want = _bad_index_message(codes, scales, idx)
    dc, ds, di = codes.cuda(), scales.cuda(), idx.cuda()
    with pytest.raises(IndexError) as info:
        if with_out:
            ops.gather_rows(dc, ds, di, out=torch.empty(5, 8, device="cuda"))
        else:
            ops.gather_rows(dc, ds, di)
    assert str(info.value).splitlines()[0] == want
    # The context is intact: the next CUDA work runs and is right.
    good = torch.tensor([9, 0], device="cuda")
    got = ops.gather_rows(dc, ds, good)
    torch.cuda.synchronize()
    _assert_rows(got, _expected64(codes, scales, good.cpu()), torch.float32)


@CUDA
def test_gather_cuda_unchecked_reads_nan_rows():
    store = torch.randn(10, 8, device="cuda")
    idx = torch.tensor([2, 10, -1, 9], device="cuda")
    with ptcore.input_checks(False):
        got = ops.gather_rows(store, None, idx)
    torch.cuda.synchronize()
    assert bool(got[1:3].isnan().all())
    assert torch.equal(got[[0, 3]], store[[2, 9]])


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_out(device):
    x = _features(7, 40, torch.float32, device)
    codes, scales = ops.quantize_rows(x)
    idx = torch.tensor([6, 0, 0], device=device)
    out = torch.empty(3, 40, dtype=torch.float16, device=device)
    torch.library.opcheck(torch.ops.ptcore.gather_rows.out,
                          (codes, scales, idx, torch.float16), {"out": out})
    torch.library.opcheck(torch.ops.ptcore.gather_rows.out,
                          (x.bfloat16(), None, idx, torch.float16), {"out": out})
