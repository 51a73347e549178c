"""FeatureCache under faults and reuse: a build killed with SIGKILL resumes from verified
rows (damaged committed rows restart it), damaged manifests rebuild, relabelled or changed
data rebuilds, foreign folders are refused, two builders into one folder do the work once."""
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import datasets
from torchvision import transforms as T

from ptcore import FeatureCache
from ptcore.cache.persist import CacheDirError
from ptcore.data import TensorImageDataset

from cache_fixtures import CountingNet, Images
from tests.helpers import kill_when_committed
from slow_build import slow_net

HERE = Path(__file__).parent


def build(net, data, path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 8)
    return FeatureCache(net, data, path=path, **kw).build()


def _killed_build(path: Path, rows: int) -> dict:
    """Start slow_build.py, SIGKILL it once ``rows`` rows are committed; its progress."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), str(HERE)]))
    proc = subprocess.Popen([sys.executable, str(HERE / "slow_build.py"), str(path)], env=env)
    return kill_when_committed(proc, path / "progress.json", rows, what="build")


def test_a_build_killed_mid_write_resumes_from_verified_rows(tmp_path):
    progress = _killed_build(tmp_path / "a", rows=40)
    assert not (tmp_path / "a" / "meta.json").exists()  # nothing unverified is served
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with open(tmp_path / "b" / "features.bin.partial", "r+b") as f:  # a committed row flips
        f.seek(17)
        b = f.read(1)
        f.seek(17)
        f.write(bytes([b[0] ^ 0xFF]))
    fresh = FeatureCache(slow_net(), Images(n=400), dtype=torch.int8, progress=False).build()
    for name, warning, computed in (("a", "resuming", 400 - progress["rows_done"]),
                                    ("b", "restarting", 400)):
        net = slow_net()
        net.forward = CountingNet.forward.__get__(net)  # no sleeping in this process
        with pytest.warns(UserWarning, match=warning):
            cache = build(net, Images(n=400), tmp_path / name, dtype=torch.int8)
        assert net.seen == computed
        assert torch.equal(cache.get(range(400), out_dtype=torch.float32),
                           fresh.get(range(400), out_dtype=torch.float32))
        assert torch.equal(cache.labels, fresh.labels)


@pytest.mark.parametrize("meta", ['[1, 2]', '{"parts": 3}', '{"files": []}', "{"])
def test_a_malformed_manifest_rebuilds(net, data, tmp_path, meta):
    first = build(net, data, tmp_path)
    doc = json.loads((tmp_path / "meta.json").read_text())
    text = meta if meta != '{"files": []}' else json.dumps(dict(doc, files=[]))
    (tmp_path / "meta.json").write_text(text)
    again = build(net, data, tmp_path)
    assert torch.equal(again[:], first[:])


def _digits_like(targets):
    g = torch.Generator().manual_seed(1)
    return TensorImageDataset(torch.rand(30, 1, 8, 8, generator=g), targets, ["a", "b", "c"])


def test_permuted_labels_rebuild(net, tmp_path):
    y = torch.arange(30) % 3
    build(net, _digits_like(y), tmp_path)
    with pytest.warns(UserWarning, match="labels changed"):
        again = build(net, _digits_like(y.roll(1)), tmp_path)
    assert torch.equal(again.labels, y.roll(1))


def _folder(root: Path, n: int = 12) -> Path:
    for i in range(n):
        d = root / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(d / f"{i}.png")
    return root


def _images(root):
    return datasets.ImageFolder(str(root), transform=T.ToTensor())


def test_a_changed_unsampled_image_or_another_root_rebuilds(net, tmp_path):
    root = _folder(tmp_path / "a")
    build(net, _images(root), tmp_path / "cache")
    assert net.seen == 12
    unsampled = root / "c1" / "3.png"  # the probe reads items 0, 5 and 11 of 12
    Image.new("RGB", (8, 8), (0, 255, 0)).save(unsampled)
    with pytest.warns(UserWarning, match="origin changed"):
        build(net, _images(root), tmp_path / "cache")
    assert net.seen == 24
    other = _folder(tmp_path / "b")  # the same size and labels, another folder
    with pytest.warns(UserWarning, match="origin changed"):
        build(net, _images(other), tmp_path / "cache")
    assert net.seen == 36


class Hidden(torch.utils.data.Dataset):
    """Data no origin check can see (a private tensor): only reading items tells."""

    def __init__(self, x):
        self._x = x

    def __len__(self):
        return len(self._x)

    def __getitem__(self, i):
        return self._x[i], 0


def test_verify_full_reads_every_item(net, tmp_path):
    x = torch.randn(40, 3, 8, 8)
    build(net, Hidden(x), tmp_path, verify="full")
    x2 = x.clone()
    x2[7] += 1  # not among the sampled items (0, 20, 39)
    build(net, Hidden(x2), tmp_path / "s", verify="sample")
    assert net.seen == 80
    build(net, Hidden(x2), tmp_path / "s", verify="sample")
    with pytest.warns(UserWarning, match="sampled inputs changed"):
        build(net, Hidden(x2), tmp_path, verify="full")
    assert net.seen == 120
    with pytest.raises(ValueError, match="verify"):
        FeatureCache(net, Hidden(x), verify="some")


def test_a_foreign_folder_is_refused_and_left_alone(net, data, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "meta.json").write_text('{"a": 1}')
    with pytest.raises(CacheDirError, match="not a ptcore cache directory"):
        build(net, data, tmp_path)
    assert (tmp_path / "meta.json").read_text() == '{"a": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheDirError, match="is a file"):
        build(net, data, tmp_path / "file")


def test_two_builders_into_one_folder_compute_once(tmp_path):
    nets = [slow_net(), slow_net()]
    caches, errors = [None, None], []

    def run(i):
        try:
            caches[i] = build(nets[i], Images(n=48), tmp_path)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(n.seen for n in nets) == [0, 48]  # the second waited, then loaded
    assert torch.equal(caches[0][:], caches[1][:])
