"""pytest-benchmark suite for the feature cache (issue 3's performance targets).

Run: pytest benchmarks/bench_cache.py --benchmark-only -s   (-s prints the ratio lines);
PTCORE_BENCH_THREADS=n sets torch's thread count (the recorded numbers used 1).

* gather: ptcore.ops.gather_rows (a new output, and out= a reused buffer) vs index_select
  (+ scale multiply) vs a plain copy of the same bytes, on CPU; achieved GB/s (bytes read +
  written) and the ratio to copy. benchmarks/gather_table.py prints the same comparison
  side by side in one process, with the default threads.
* epoch: one epoch of training a linear head on the embedded digits (32×32) from a float32
  FeatureCache vs running the frozen torchvision resnet18 prefix (through layer4) each step.
* int8: cache size and head accuracy of an int8 cache vs a float32 cache.
"""
import ctypes
import os
import time

import pytest
import torch
import torch.nn.functional as F

from ptcore import FeatureCache, ops

ROWS, WIDTH = 100_000, 512  # a 51 MB int8 / 205 MB float32 store: rows come from DRAM
BATCHES = [1024, 4096, 16384]
STORES = {"int8": torch.int8, "float16": torch.float16, "float32": torch.float32}
_results = {}

def _keep_freed_memory():
    """Let glibc reuse freed large buffers instead of returning them to the OS (as jemalloc
    or tcmalloc do): otherwise every new output tensor is fresh pages, and page faults, not
    the ops, set the pace of gathers and copies alike."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD


_keep_freed_memory()
if os.environ.get("PTCORE_BENCH_THREADS"):
    # On a small shared machine, a busy core stalls every multi-threaded region: pin it.
    torch.set_num_threads(int(os.environ["PTCORE_BENCH_THREADS"]))


@pytest.fixture(scope="module")
def stores():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, WIDTH, generator=g)
    codes, scales = ops.quantize_rows(x)
    return {"int8": (codes, scales), "float16": (x.half(), None), "float32": (x, None)}


def _index_select(store, scales, idx):
    rows = store.index_select(0, idx).float()
    return rows * scales.index_select(0, idx)[:, None] if scales is not None else rows


class _Copy:
    """A plain copy of n bytes into a new tensor (as the gathers allocate theirs), read from
    a rotating place in a 256 MB buffer so that, like the gathered rows, it comes from DRAM."""

    def __init__(self, n):
        self.src = torch.ones(1 << 28, dtype=torch.uint8)
        self.n, self.off = n, 0

    def __call__(self):
        self.off = (self.off + self.n) % (self.src.numel() - self.n)
        return self.src[self.off:self.off + self.n].clone()


@pytest.mark.parametrize("provider", ["ptcore", "ptcore_out", "index_select", "copy"])
@pytest.mark.parametrize("store_dtype", list(STORES))
@pytest.mark.parametrize("batch", BATCHES)
def test_gather(benchmark, stores, batch, store_dtype, provider):
    store, scales = stores[store_dtype]
    idx = torch.randint(0, ROWS, (batch,), generator=torch.Generator().manual_seed(1))
    moved = batch * WIDTH * (store.element_size() + 4) + (batch * 4 if scales is not None else 0)
    buf = torch.empty(batch, WIDTH)
    fn = {"ptcore": lambda: ops.gather_rows(store, scales, idx, torch.float32),
          "ptcore_out": lambda: ops.gather_rows(store, scales, idx, out=buf),
          "index_select": lambda: _index_select(store, scales, idx),
          "copy": _Copy(moved // 2)}[provider]  # read moved/2 + write moved/2 bytes
    benchmark.group = f"gather {store_dtype}→float32 [{batch}×{WIDTH}]"
    benchmark.pedantic(fn, rounds=100, iterations=1, warmup_rounds=10)
    benchmark.extra_info["bytes_moved"] = moved
    if benchmark.stats is not None:
        gbs = moved / benchmark.stats.stats.median / 1e9
        benchmark.extra_info["GB_per_s"] = gbs
        _results[(batch, store_dtype, provider)] = gbs
        if provider == "copy":
            mine = _results.get((batch, store_dtype, "ptcore"))
            into = _results.get((batch, store_dtype, "ptcore_out"))
            other = _results.get((batch, store_dtype, "index_select"))
            if mine and into and other:
                print(f"\ngather {store_dtype} B={batch}: ptcore {mine:.1f} GB/s = "
                      f"{mine / gbs:.0%} of copy ({gbs:.1f} GB/s), into a reused buffer "
                      f"{into:.1f} GB/s = {into / gbs:.0%}; index_select {other:.1f} "
                      f"GB/s = {other / gbs:.0%}")


def _resnet18_prefix():
    import torchvision

    torch.manual_seed(0)
    r = torchvision.models.resnet18(weights=None)
    return torch.nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3,
                               r.layer4).eval().requires_grad_(False)


def _digits():
    from ptcore.data import digits_dataset

    return digits_dataset(image_size=32)


@pytest.fixture(scope="module")
def digits_setup():
    prefix, data = _resnet18_prefix(), _digits()
    caches = {}
    for name, dtype in (("float32", torch.float32), ("int8", torch.int8)):
        t0 = time.perf_counter()
        caches[name] = FeatureCache(prefix, data, dtype=dtype, progress=False).build()
        caches[name + "_build_s"] = time.perf_counter() - t0
    return prefix, data, caches


def _head():
    torch.manual_seed(0)
    head = torch.nn.Linear(512, 10)
    return head, torch.optim.Adam(head.parameters(), lr=1e-3)


def _step(head, opt, feats, labels):
    loss = F.cross_entropy(head(feats.flatten(1)), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


@pytest.mark.parametrize("source", ["cache", "prefix"])
def test_head_epoch(benchmark, digits_setup, source):
    prefix, data, caches = digits_setup
    head, opt = _head()
    gen = torch.Generator().manual_seed(0)
    if source == "cache":
        def epoch():
            for feats, labels in caches["float32"].loader(64, generator=gen):
                _step(head, opt, feats, labels)
    else:
        loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True, generator=gen)

        def epoch():
            for x, labels in loader:
                with torch.no_grad():
                    feats = prefix(x)
                _step(head, opt, feats, labels)
    benchmark.group = "head epoch: resnet18 prefix (layer4), digits 32×32"
    benchmark.pedantic(epoch, rounds=10 if source == "cache" else 2, iterations=1,
                       warmup_rounds=1)
    if benchmark.stats is not None:
        _results[("epoch", source)] = benchmark.stats.stats.median
        benchmark.extra_info["epoch_s"] = benchmark.stats.stats.median
        benchmark.extra_info["cache_build_s"] = caches["float32_build_s"]
        if source == "prefix" and ("epoch", "cache") in _results:
            ratio = _results[("epoch", "prefix")] / _results[("epoch", "cache")]
            benchmark.extra_info["speedup_from_cache"] = ratio
            print(f"\nhead epoch: cache {_results[('epoch', 'cache')] * 1e3:.1f} ms, prefix "
                  f"{_results[('epoch', 'prefix')]:.2f} s: {ratio:.0f}× faster from the cache "
                  f"(building it took {caches['float32_build_s']:.2f} s)")


def _train_and_score(cache, train_idx, test_idx, epochs=40):
    head, opt = _head()
    gen = torch.Generator().manual_seed(1)
    labels = cache.labels
    for _ in range(epochs):
        for chunk in train_idx[torch.randperm(len(train_idx), generator=gen)].split(64):
            _step(head, opt, cache[chunk], labels[chunk])
    with torch.no_grad():
        pred = head(cache[test_idx].flatten(1)).argmax(1)
    return 100.0 * (pred == labels[test_idx]).float().mean().item()


def test_int8_size_and_accuracy(benchmark, digits_setup):
    _, data, caches = digits_setup
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(2))
    train_idx, test_idx = order[:1437], order[1437:]
    scores = {}

    def run():
        for name in ("float32", "int8"):
            scores[name] = _train_and_score(caches[name], train_idx, test_idx)

    benchmark.group = "int8 vs float32 cache"
    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = caches["float32"].nbytes / caches["int8"].nbytes
    benchmark.extra_info.update(size_ratio=ratio, acc_float32=scores["float32"],
                                acc_int8=scores["int8"],
                                bytes_float32=caches["float32"].nbytes,
                                bytes_int8=caches["int8"].nbytes)
    print(f"\nint8 cache {caches['int8'].nbytes / 1e6:.2f} MB vs float32 "
          f"{caches['float32'].nbytes / 1e6:.2f} MB: {ratio:.2f}× smaller; head accuracy "
          f"{scores['int8']:.2f}% vs {scores['float32']:.2f}% "
          f"({scores['int8'] - scores['float32']:+.2f} points)")
    assert ratio >= 3.5
