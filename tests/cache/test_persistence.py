"""FeatureCache on disk: reuse, invalidation, damaged files, resumed builds, disk tier."""
import json
import os

import pytest
import torch
from torchvision import transforms as T

from ptcore import FeatureCache
from ptcore.cache import feature_cache

from cache_fixtures import Images, expected


def build(net, data, path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 8)
    return FeatureCache(net, data, path=path, **kw).build()


def test_reuse_does_not_run_the_module(net, data, tmp_path):
    first = build(net, data, tmp_path, dtype=torch.int8)
    assert net.seen == 40
    again = build(net, data, tmp_path, dtype=torch.int8)
    assert net.seen == 40  # loaded, not recomputed
    assert again.fingerprint == first.fingerprint
    assert torch.equal(again[:], first[:]) and torch.equal(again.labels, data.y)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert set(meta["files"]) == {"features", "scales", "labels"}
    assert not (tmp_path / "progress.json").exists()


def test_one_weight_change_rebuilds(net, data, tmp_path):
    old = build(net, data, tmp_path, dtype=torch.float32)
    with torch.no_grad():
        net.body[0].weight[0, 0, 0, 0] += 1e-3
    with pytest.warns(UserWarning, match="rebuilding .*weights"):
        new = build(net, data, tmp_path, dtype=torch.float32)
    assert net.seen == 80
    assert new.fingerprint != old.fingerprint
    assert torch.equal(new[:], expected(net, data.x))


def test_bn_statistics_change_rebuilds(net, data, tmp_path):
    build(net, data, tmp_path)
    net.body[1].running_mean.add_(0.1)
    with pytest.warns(UserWarning, match="buffers"):
        build(net, data, tmp_path)
    assert net.seen == 80


def test_transform_change_rebuilds(net, tmp_path):
    build(net, Images(transform=T.Normalize([0.5] * 3, [1.0] * 3)), tmp_path)
    with pytest.warns(UserWarning, match="transform changed"):
        build(net, Images(transform=T.Normalize([0.4] * 3, [1.0] * 3)), tmp_path)
    assert net.seen == 80


def test_changed_data_or_dtype_rebuilds(net, data, tmp_path):
    build(net, data, tmp_path)
    with pytest.warns(UserWarning, match="inputs changed"):
        build(net, Images(seed=1), tmp_path)
    with pytest.warns(UserWarning, match="storage dtype changed"):
        build(net, Images(seed=1), tmp_path, dtype=torch.bfloat16)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_file_is_never_served(net, data, tmp_path, damage):
    build(net, data, tmp_path, dtype=torch.int8)
    f = tmp_path / "features.bin"
    raw = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(raw[:-7])
    elif damage == "flip":
        f.write_bytes(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
    else:
        f.unlink()
    with pytest.warns(UserWarning, match="rebuilding"):
        cache = build(net, data, tmp_path, dtype=torch.int8)
    assert net.seen == 80
    ref = expected(net, data.x).reshape(40, -1)
    err = (cache[:].reshape(40, -1) - ref).abs()
    assert bool((err <= ref.abs().amax(1, keepdim=True) / 254 * (1 + 1e-6)).all())


def test_interrupted_build_resumes(net, tmp_path, monkeypatch):
    monkeypatch.setattr(feature_cache, "_COMMIT_EVERY_S", 0.0)  # commit after every batch
    with pytest.raises(KeyboardInterrupt):
        build(net, Images(fail_after=20), tmp_path)
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["rows_done"] == 16 and not (tmp_path / "meta.json").exists()
    net.seen = 0
    with pytest.warns(UserWarning, match="resuming .* from row 16 of 40"):
        cache = build(net, Images(), tmp_path)
    assert net.seen == 24  # only the rows that were missing
    assert torch.equal(cache[:], expected(net, Images().x).half().float())
    assert torch.equal(cache.labels, Images().y)


def test_interrupted_build_of_another_module_restarts(net, tmp_path, monkeypatch):
    monkeypatch.setattr(feature_cache, "_COMMIT_EVERY_S", 0.0)
    with pytest.raises(KeyboardInterrupt):
        build(net, Images(fail_after=20), tmp_path)
    with torch.no_grad():
        net.body[0].bias.add_(1)
    net.seen = 0
    cache = build(net, Images(), tmp_path)
    assert net.seen == 40
    assert torch.equal(cache[:], expected(net, Images().x).half().float())


@pytest.mark.parametrize("dtype", [torch.int8, torch.bfloat16])
def test_disk_round_trip(net, data, tmp_path, dtype):
    in_memory = FeatureCache(net, data, dtype=dtype, progress=False).build()
    on_disk = build(net, data, tmp_path, dtype=dtype, storage="disk")
    assert on_disk.tier == "disk" and in_memory.tier == "cpu"
    assert torch.equal(on_disk[:], in_memory[:])
    assert on_disk.nbytes == in_memory.nbytes
    reopened = build(net, data, tmp_path, dtype=dtype, storage="disk")
    assert torch.equal(reopened[[3, 1, 3]], in_memory[[3, 1, 3]])
    assert os.path.getsize(tmp_path / "features.bin") == 40 * 32 * dtype.itemsize


def test_resume_with_lost_partial_file_restarts(net, tmp_path, monkeypatch):
    monkeypatch.setattr(feature_cache, "_COMMIT_EVERY_S", 0.0)
    with pytest.raises(KeyboardInterrupt):
        build(net, Images(fail_after=20), tmp_path)
    (tmp_path / "features.bin.partial").write_bytes(b"")
    net.seen = 0
    with pytest.warns(UserWarning, match="restarting the build"):
        cache = build(net, Images(), tmp_path)
    assert net.seen == 40
    assert torch.equal(cache[:], expected(net, Images().x).half().float())
