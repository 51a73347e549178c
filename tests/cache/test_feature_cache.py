"""FeatureCache in memory: what it stores, how it serves it, what it leaves alone."""
import math

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import ptcore
from ptcore import FeatureCache

from cache_fixtures import Images, expected

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def build(net, data, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 16)
    return FeatureCache(net, data, **kw).build()


def test_float32_is_exact(net, data):
    cache = build(net, data, dtype=torch.float32)
    assert len(cache) == 40 and cache.sample_shape == (8, 2, 2)
    assert torch.equal(cache[:], expected(net, data.x))
    assert cache[:].dtype == torch.float32
    assert torch.equal(cache.labels, data.y)
    assert ptcore.FeatureCache is FeatureCache


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_rounds_once(net, data, dtype):
    cache = build(net, data, dtype=dtype)
    ref = expected(net, data.x)
    assert torch.equal(cache[:], ref.to(dtype).float())
    assert torch.equal(cache.get([1, 2], out_dtype=dtype), ref[[1, 2]].to(dtype))


def test_int8_error_bound_and_size(net, data):
    f32 = build(net, data, dtype=torch.float32)
    q = build(net, data, dtype=torch.int8)
    ref = f32[:].reshape(40, -1)
    step = ref.abs().amax(dim=1, keepdim=True) / 127
    err = (q[:].reshape(40, -1) - ref).abs()
    assert bool((err <= step / 2 * (1 + 1e-6)).all())
    assert bool((err > 0).any())  # it is quantized, not stored as floats
    labels = 40 * 8
    rows32, rows8 = f32.nbytes - labels, q.nbytes - labels
    assert rows32 == 40 * 32 * 4 and rows8 == 40 * (32 + 4)
    assert q.fingerprint != f32.fingerprint


def test_indexing(net, data):
    cache = build(net, data, dtype=torch.float32)
    ref = expected(net, data.x)
    assert torch.equal(cache[[5, 5, 0]], ref[[5, 5, 0]])  # duplicates
    assert torch.equal(cache[torch.tensor([39])], ref[[39]])
    assert torch.equal(cache[7], ref[7])  # an int gives one sample
    assert torch.equal(cache[10:20:3], ref[10:20:3])
    assert cache[[]].shape == (0, 8, 2, 2)
    for bad in (40, -1, [0, 99]):
        with pytest.raises(IndexError, match="out of range"):
            cache[bad]
    with pytest.raises(TypeError, match="indices must be"):
        cache[torch.tensor([0.5])]


def test_module_state_untouched(net, data):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.body[0].weight.requires_grad_(False)
    net.body[1].eval()  # a mixed mode must come back mixed
    build(net, data, dtype=torch.int8)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. BN running stats
    assert net.training and net.body[0].training and not net.body[1].training
    assert not net.body[0].weight.requires_grad and net.body[0].bias.requires_grad


def test_loader_covers_each_sample_once(net, data):
    cache = build(net, data, dtype=torch.float16)
    loader = cache.loader(16, generator=torch.Generator().manual_seed(3))
    assert len(loader) == 3
    feats, labels = zip(*loader)
    assert [f.shape[0] for f in feats] == [16, 16, 8]
    feats, labels = torch.cat(feats), torch.cat(labels)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    assert torch.equal(labels, data.y[order])
    assert torch.equal(feats, cache[order])
    assert len(list(cache.loader(16, drop_last=True, shuffle=False))) == 2


def test_as_dataset_with_distributed_sampler(net, data):
    cache = build(net, data, dtype=torch.float32)
    ds = cache.as_dataset()
    sampler = DistributedSampler(ds, num_replicas=2, rank=1, shuffle=False)
    x, y = next(iter(DataLoader(ds, batch_size=4, sampler=sampler)))
    assert torch.equal(x, cache[[1, 3, 5, 7]]) and torch.equal(y, data.y[[1, 3, 5, 7]])
    feature, label = ds[2]
    assert torch.equal(feature, cache[2]) and int(label) == int(data.y[2])


def test_unlabelled_data(net):
    cache = build(net, Images(labels=False), dtype=torch.float32)
    assert cache.labels is None
    feats, labels = next(iter(cache.loader(8)))
    assert feats.shape == (8, 8, 2, 2) and labels is None
    assert cache.as_dataset()[0].shape == (8, 2, 2)


def test_shard_holds_its_share(net, data):
    ranks = [build(net, data, dtype=torch.float32, shard=(r, 3)) for r in range(3)]
    assert [len(c) for c in ranks] == [14, 13, 13]
    ref = expected(net, data.x)
    for r, c in enumerate(ranks):
        assert torch.equal(c[:], ref[r::3]) and torch.equal(c.labels, data.y[r::3])
        # Equal steps on every rank (DDP needs them): short shards wrap around.
        assert len(c.loader(5)) == math.ceil(14 / 5)
        assert sum(f.shape[0] for f, _ in c.loader(5)) == 14


def test_argument_errors(net, data):
    with pytest.raises(TypeError, match="dtype must be"):
        FeatureCache(net, data, dtype=torch.int32)
    with pytest.raises(ValueError, match="storage must be"):
        FeatureCache(net, data, storage="ram")
    with pytest.raises(ValueError, match="needs a path"):
        build(net, data, storage="disk")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="storage='device'"):
            build(net, data, storage="device")
    with pytest.raises(ValueError, match="views must be"):
        FeatureCache(net, data, views=0)
    with pytest.raises(ValueError, match="shard must be"):
        FeatureCache(net, data, shard=(2, 2))
    with pytest.raises(RuntimeError, match="not built yet"):
        FeatureCache(net, data)[0]
    with pytest.raises(TypeError, match="labels .* must be integers"):
        build(net, TensorDataset(data.x, data.y.float()))


def test_non_finite_output_refused(net, data):
    data.x[3, 0, 0, 0] = float("inf")
    with pytest.raises(RuntimeError, match="inf or NaN"):
        build(net, data)


def test_resnet18_prefix():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    r = tv.models.resnet18(weights=None)
    prefix = torch.nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3,
                                 r.layer4).eval()
    data = TensorDataset(torch.randn(12, 3, 32, 32), torch.arange(12))
    cache = build(prefix, data, dtype=torch.float16, batch_size=5)
    with torch.no_grad():
        ref = prefix(data.tensors[0])
    assert cache.sample_shape == (512, 1, 1)
    assert torch.equal(cache[:], ref.half().float())


@pytest.fixture(params=[(s, d) for s in ("device", "cpu") for d in (torch.int8, torch.float16)],
                ids=lambda p: f"{p[0]}-{str(p[1])[6:]}")
def cuda_pair(request, net, data):
    """(a CPU cache, the same cache on CUDA stored on ``storage``, its storage)."""
    storage, dtype = request.param
    cpu_cache = build(net, data, dtype=dtype, storage="cpu")
    return cpu_cache, build(net.cuda(), data, dtype=dtype, storage=storage), storage


@CUDA
def test_cuda_tiers(cuda_pair):
    cpu_cache, cache, storage = cuda_pair
    assert cache.tier == storage and cache.device.type == "cuda"
    idx = [3, 3, 39, 0]
    got = cache[idx]
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), cpu_cache[idx], atol=2e-2, rtol=2e-2)
    feats, labels = next(iter(cache.loader(8)))
    assert feats.is_cuda and labels.is_cuda


@pytest.mark.parametrize("dtype", [torch.int8, torch.float16, torch.float32])
def test_get_into_reused_buffer(net, data, dtype):
    cache = build(net, data, dtype=dtype)
    ref = expected(net, data.x).double()
    out = torch.full((4, 8, 2, 2), float("nan"))
    for idx in ([3, 3, 39, 0], [1, 2, 3, 4]):
        fresh = cache.get(idx)
        got = cache.get(idx, out=out)
        assert got is out and torch.equal(out, fresh)  # identical to a fresh batch
        tol = {torch.int8: 2e-2, torch.float16: 1e-3, torch.float32: 0}[dtype]
        torch.testing.assert_close(out.double(), ref[idx], rtol=tol, atol=tol * ref.abs().max())
    half = torch.empty(2, 8, 2, 2, dtype=torch.float16)  # dtype from out
    assert torch.equal(cache.get([5, 6], out=half), cache.get([5, 6], out_dtype=torch.float16))
    one = torch.empty(1, 8, 2, 2)  # an int index: one sample, written to out[0]
    assert torch.equal(cache.get(7, out=one), cache[7]) and torch.equal(one[0], cache[7])
    assert cache.get([], out=torch.empty(0, 8, 2, 2)).shape == (0, 8, 2, 2)


def test_get_out_errors(net, data):
    cache = build(net, data, dtype=torch.int8)
    shape = r"out must be a contiguous tensor of shape \[2, 8, 2, 2\]"
    with pytest.raises(ValueError, match=shape):
        cache.get([0, 1], out=torch.empty(2, 32))
    with pytest.raises(ValueError, match="not contiguous"):
        cache.get([0, 1], out=torch.empty(2, 2, 2, 8).permute(0, 3, 1, 2))
    with pytest.raises(TypeError, match="out must be Float like dtype"):
        cache.get([0, 1], out=torch.empty(2, 8, 2, 2, dtype=torch.float16),
                  out_dtype=torch.float32)


@CUDA
def test_cuda_batches_through_staging(cuda_pair):
    cpu_cache, cache, storage = cuda_pair
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    # Queue several batches without syncing: each must come out whole, although the host
    # refills one staging buffer for each of them.
    batches = [(pos, cache.get(pos)) for pos in order.split(16)]
    out = torch.empty(16, 8, 2, 2, device="cuda")
    into = cache.get(order[:16], out=out)
    torch.cuda.synchronize()
    for pos, got in batches:
        assert got.is_cuda and torch.equal(got.cpu(), cpu_cache.get(pos))
    assert into is out and torch.equal(out.cpu(), cpu_cache.get(order[:16]))
    if storage == "cpu":
        staged = cache._store._staged[0]
        assert staged.is_pinned() and staged.shape[0] == 16
        cache.get([1, 2])  # a smaller batch reuses the buffers
        assert cache._store._staged[0].data_ptr() == staged.data_ptr()
