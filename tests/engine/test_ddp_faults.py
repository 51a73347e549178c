"""2-process gloo runs under faults, launched like torchrun launches them (environment
variables, env:// rendezvous, ptcore's own setup with a short timeout): a rank that exits
mid-epoch and a rank 0 that fails while saving (an epoch's checkpoint, or an incremental
task's state) end every rank non-zero within the timeout;
a resume from a mid-epoch checkpoint that rank 1's disk lacks (node-local disks) takes
rank 0's, skips the same batches on both ranks and equals an uninterrupted run; under the
`ptcore` command only rank 0 prints; only rank 0 writes the CSV and TensorBoard logs."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ptcore.engine import fit, read_metrics
from tests.engine.ddp_faults_worker import BATCH, EPOCHS, N
from tests.engine.tiny import tiny_digits, tiny_net

ROOT = Path(__file__).parents[2]
TIMEOUT_S = 5  # ptcore's DDP timeout in these runs
LIMIT_S = 120  # start-up of two Python processes with torch on a loaded machine included


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str]) -> list[subprocess.CompletedProcess]:
    port = _port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PYTHONPATH=str(ROOT),
                   PTCORE_DDP_TIMEOUT=str(TIMEOUT_S), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    deadline = time.monotonic() + LIMIT_S
    done = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"a rank was still running after {LIMIT_S} s")
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def _worker(*args) -> list[subprocess.CompletedProcess]:
    return _launch(["-m", "tests.engine.ddp_faults_worker", *map(str, args)])


def test_a_rank_that_exits_mid_epoch_ends_the_other(tmp_path):
    r0, r1 = _worker("rank1_exits", tmp_path)
    assert r1.returncode == 3
    assert r0.returncode != 0, r0.stderr[-2000:]
    assert not (tmp_path / "last.pt").exists()


def test_rank_0_failing_while_saving_ends_every_rank(tmp_path):
    r0, r1 = _worker("save_fails", tmp_path)
    assert r0.returncode != 0 and "No space left on device" in r0.stderr
    assert r1.returncode != 0
    assert "rank 0 failed while saving the checkpoint of epoch 1" in r1.stderr


def test_rank_0_failing_to_save_a_task_ends_every_rank_at_once(tmp_path):
    began = time.monotonic()
    r0, r1 = _worker("incremental_save_fails", tmp_path)
    assert r0.returncode != 0 and "No space left on device" in r0.stderr
    assert r1.returncode != 0
    assert "rank 0 failed while saving task 0" in r1.stderr, r1.stderr[-2000:]
    assert not (tmp_path / "task_1").exists()  # rank 1 did not go on to the next task
    assert time.monotonic() - began < LIMIT_S


def test_resume_with_node_local_disks_equals_an_uninterrupted_run(tmp_path):
    assert [r.returncode for r in _worker("interrupted", tmp_path)] == [0, 0]
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 2)  # mid-epoch: each rank skips 2 batches
    (tmp_path / "rank1-local").mkdir()
    runs = _worker("resume", tmp_path, tmp_path / "final.pt")
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr[-2000:]
    model = tiny_net()  # one process with the global batch sees the same samples
    history = fit(model, tiny_digits(N), torch.optim.SGD(model.parameters(), lr=0.1,
                                                         momentum=0.9),
                  epochs=EPOCHS, batch_size=2 * BATCH, schedule="cosine", progress=False)
    ddp = torch.load(tmp_path / "final.pt", weights_only=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)
    # Both ranks' partial sums of epoch 2 came back from the checkpoint.
    resumed = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["train_loss"] for r in resumed] == pytest.approx(
        [r["train_loss"] for r in history], rel=1e-5)


def test_only_rank_0_speaks_under_the_command(tmp_path):
    runs = _launch(["-m", "ptcore", "finetune", "--model", "resnet18", "--image-size", "16",
                    "--classes", "0,1", "--shots", "4", "--epochs", "1", "--batch-size", "4",
                    "--val", "0", "--test", "0.05",
                    "--out", str(tmp_path / "run")])
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
    assert "test accuracy" in runs[0].stdout
    assert runs[1].stdout == "" and runs[1].stderr == ""


def test_only_rank_0_writes_the_csv_and_tensorboard_logs(tmp_path):
    from tests.engine.test_loggers import _csv, _scalars

    (tmp_path / "rank1-local").mkdir()  # rank 1's own out folder (a node-local disk)
    runs = _worker("log", tmp_path)
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr[-2000:]
    assert [p for p in (tmp_path / "rank1-local").rglob("*")] == []
    steps_per_epoch = N // (2 * BATCH)  # the global batch: both ranks make one step
    steps = _csv(tmp_path / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, EPOCHS * steps_per_epoch + 1))
    assert len(_csv(tmp_path / "epochs.csv")) == EPOCHS
    assert [s for s, _ in _scalars(tmp_path, "step/loss")] == [int(r["step"]) for r in steps]
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1  # one writer: rank 0's
