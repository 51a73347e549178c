"""Checkpoints under faults: byte flips and truncation anywhere (model, optimizer, RNG,
history) are an error, never a silently different state; a full disk or an I/O error while
writing leaves the old file byte-identical and no temp file; an output folder that holds
another run is refused; resume refuses other settings; metrics have no gap after a kill."""
import errno
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ptcore.engine import (CheckpointError, RunFolderError, UnreadableFileError, fit,
                           load_checkpoint, read_metrics, save_checkpoint)
from ptcore.runtime import files as F
from ptcore.engine.metrics import MetricsLog
from tests.engine.tiny import tiny_digits, tiny_net

BAD = (CheckpointError, UnreadableFileError)


def _payload():
    g = torch.Generator().manual_seed(0)
    model = {"w": torch.randn(64, generator=g), "b": torch.arange(5.0)}
    optimizer = {"state": {0: {"exp_avg": torch.randn(64, generator=g) + 7}},
                 "param_groups": [{"lr": 0.125, "params": [0]}]}
    rng = {"torch": torch.randint(0, 255, (600,), dtype=torch.uint8, generator=g)}
    history = [{"epoch": 0, "train_loss": 1.2345678901234}]
    return model, dict(optimizer=optimizer, rng=rng, history=history, epoch=1)


def _located(data: bytes, model, state) -> dict[str, int]:
    """Offsets of a byte inside each part's own bytes (tensors raw, floats big-endian in
    the pickle), to flip them on purpose."""
    where = {"model": model["w"], "optimizer": state["optimizer"]["state"][0]["exp_avg"],
             "rng": state["rng"]["torch"]}
    found = {k: data.find(t.numpy().tobytes()[:32]) for k, t in where.items()}
    found["history"] = data.find(struct.pack(">d", state["history"][0]["train_loss"]))
    assert all(v > 0 for v in found.values()), found
    return found


@pytest.mark.parametrize("part", ["model", "optimizer", "rng", "history"])
def test_a_flipped_byte_in_any_part_is_an_error(tmp_path, part):
    model, state = _payload()
    path = save_checkpoint(tmp_path / "c.pt", model, **state)
    data = bytearray(path.read_bytes())
    data[_located(bytes(data), model, state)[part] + 3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(BAD):
        load_checkpoint(path)


def test_random_flips_and_truncations_never_load_a_different_state(tmp_path):
    model, state = _payload()
    path = save_checkpoint(tmp_path / "c.pt", model, **state)
    good = path.read_bytes()
    ref = load_checkpoint(path)
    rnd = random.Random(0)
    for i in range(60):
        data = bytearray(good)
        if i % 3 == 0:
            data = data[:rnd.randrange(len(good))]
        else:
            data[rnd.randrange(len(good))] ^= 1 << rnd.randrange(8)
        path.write_bytes(bytes(data))
        try:
            got = load_checkpoint(path)
        except BAD:
            continue
        assert got["sha256"] == ref["sha256"]  # a flip in bytes nobody reads (zip padding)
        for k in model:
            assert torch.equal(got["model"][k], ref["model"][k])
        assert torch.equal(got["optimizer"]["state"][0]["exp_avg"],
                           ref["optimizer"]["state"][0]["exp_avg"])
        assert got["history"] == ref["history"]


@pytest.mark.parametrize("fail", ["fsync", "replace"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, fail, code):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"w": torch.zeros(3)}, epoch=1)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(F.os, fail, broken)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, {"w": torch.ones(3)}, epoch=2)
    monkeypatch.undo()
    assert info.value.errno == code and info.value.filename == str(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 1


def test_rename_is_followed_by_a_directory_fsync(tmp_path, monkeypatch):
    synced = []
    real = F.fsync_dir
    monkeypatch.setattr(F, "fsync_dir", lambda d: (synced.append(str(d)), real(d)))
    F.atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert synced == [str(tmp_path)]


def _train(out, epochs=2, lr=0.1, batch_size=16, resume=False, model=None, **kw):
    model = model or tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    fit(model, tiny_digits(48), opt, epochs=epochs, batch_size=batch_size, out_dir=out,
        resume=resume, progress=False, **kw)
    return model


def test_a_folder_holding_a_run_is_refused_and_resume_checks_settings(tmp_path):
    _train(tmp_path, epochs=1)
    with pytest.raises(RunFolderError, match="holds another run"):
        _train(tmp_path, epochs=1)
    with pytest.raises(CheckpointError, match=r"optimizer\.groups\.0\.lr: 0\.1 -> 0\.2"):
        _train(tmp_path, epochs=1, lr=0.2, resume=True)
    with pytest.raises(CheckpointError, match="batch_size: 16 -> 8"):
        _train(tmp_path, epochs=1, batch_size=8, resume=True)
    wider = torch.nn.Sequential(*tiny_net(), torch.nn.Linear(10, 3))
    with pytest.raises(CheckpointError, match="model"):
        _train(tmp_path, epochs=1, resume=True, model=wider)
    with pytest.raises(RunFolderError, match="nothing to resume"):
        _train(tmp_path / "typo", resume=True)
    _train(tmp_path / "new", epochs=1, resume="auto")  # auto: starts when there is none
    assert load_checkpoint(tmp_path / "new" / "last.pt")["epoch"] == 1


def test_a_kill_between_metrics_and_checkpoint_leaves_no_gap(tmp_path, monkeypatch):
    real = MetricsLog.append
    calls = []

    def dying(self, record):
        calls.append(record["epoch"])
        real(self, record)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after epoch 1's line, before its checkpoint

    monkeypatch.setattr(MetricsLog, "append", dying)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, epochs=3)
    monkeypatch.undo()
    (tmp_path / ".last.pt.x.tmp").write_bytes(b"torn")  # what a kill mid-write leaves
    _train(tmp_path, epochs=3, resume=True)
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "metrics.jsonl"]


def test_sigkill_mid_checkpoint_write_keeps_the_previous_one(tmp_path):
    from tests.engine.kill_worker import train

    root = Path(__file__).parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "tests.engine.kill_worker", str(tmp_path)],
                            cwd=root, env=dict(os.environ, PYTHONPATH=str(root)))
    deadline = time.monotonic() + 120
    while not (tmp_path / "stalled").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "never reached the write"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (tmp_path / "stalled").unlink()
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the torn write
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # the previous one verifies
    resumed = train(tmp_path, resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "metrics.jsonl"]
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2]
    full = train(tmp_path / "full")
    for (name, a), b in zip(resumed.state_dict().items(), full.state_dict().values()):
        assert torch.equal(a, b), name
