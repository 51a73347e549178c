"""The run folder's one owner: a folder belongs to one run (claim, refuse, resume with the
same settings, overwrite), the names every layer asks it for, and the final files, written
once and atomically."""
import errno
import json
from pathlib import Path

import pytest

import ptcore.runtime.files as F
from ptcore.cli import main
from ptcore.engine import save_checkpoint
from ptcore.runtime.run_folder import (CHECKPOINT, METRICS, MODEL, RUN, STATE, SUMMARY,
                                       RunFolder, RunFolderError)

SETTINGS = {"lr": 0.1, "model": "resnet18"}


def _claim(out, settings=SETTINGS, resume=False, overwrite=False) -> RunFolder:
    return RunFolder(out).claim("finetune", settings, resume, overwrite)


def test_a_claim_records_the_run_and_refuses_another(tmp_path):
    run = _claim(tmp_path / "run")
    assert run.resume is False and run.claimed == "finetune"
    assert json.loads(run.record.read_text()) == {"command": "finetune", "settings": SETTINGS}
    _claim(tmp_path / "run")  # run.json alone: nothing has trained yet
    save_checkpoint(run.checkpoint, {}, epoch=1)
    with pytest.raises(RunFolderError, match=r"--out .* holds another run \(last\.pt\); pass "
                                             "--resume"):
        _claim(tmp_path / "run")
    (tmp_path / "inc" / "task_0").mkdir(parents=True)
    (tmp_path / "inc" / "task_0" / STATE).write_bytes(b"x")  # an incremental run's task
    with pytest.raises(RunFolderError, match=r"holds another run \(state\.pt\)"):
        _claim(tmp_path / "inc")
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        _claim(tmp_path / "file")


def test_resume_needs_a_run_with_the_same_settings(tmp_path):
    with pytest.raises(RunFolderError, match="nothing to resume"):
        _claim(tmp_path / "typo", resume=True)
    assert not (tmp_path / "typo").exists()
    assert _claim(tmp_path / "new", resume="auto").resume == "auto"  # starts one
    out = tmp_path / "run"
    _claim(out)
    (out / METRICS).write_text("{}\n")
    with pytest.raises(RunFolderError, match=r"lr: 0\.1 -> 0\.2.*--overwrite"):
        _claim(out, {**SETTINGS, "lr": 0.2}, resume=True)
    assert json.loads((out / RUN).read_text())["settings"] == SETTINGS  # left as it was
    assert _claim(out, resume=True).resume == "auto"
    (out / RUN).write_text("{not json")
    with pytest.raises(RunFolderError, match="is damaged"):
        _claim(out, resume=True)


def test_overwrite_deletes_the_old_runs_training_files_only(tmp_path):
    out = tmp_path / "run"
    _claim(out)
    for name in (CHECKPOINT, METRICS, SUMMARY, f"task_0/{STATE}", f"task_0/{CHECKPOINT}"):
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_bytes(b"x")
    run = _claim(out, {**SETTINGS, "lr": 0.2}, overwrite=True)
    assert run.resume is False
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        RUN, SUMMARY]
    assert json.loads(run.record.read_text())["settings"]["lr"] == 0.2


def test_names_come_from_the_owner(tmp_path):
    run = RunFolder(tmp_path)
    assert RunFolder.of(run) is run and RunFolder.of(tmp_path).path == tmp_path
    assert run.task(2).checkpoint == tmp_path / "task_2" / "last.pt"
    assert run.task(2).state == tmp_path / "task_2" / "state.pt"
    assert (run.metrics, run.epoch_copy(3), run.best_copy(12)) == (
        tmp_path / "metrics.jsonl", tmp_path / "epoch-0003.pt", tmp_path / "best-epoch-0012.pt")
    for p in (run.epoch_copy(1), run.best_copy(2), tmp_path / "epoch-x.pt", run.checkpoint):
        p.write_bytes(b"")
    assert sorted(p.name for p in run.copies()) == ["best-epoch-0002.pt", "epoch-0001.pt"]


def test_a_strategy_leaves_a_claimed_folders_summary_to_its_command(tmp_path):
    free = RunFolder(tmp_path / "free")
    free.finish({}, {"final": 1})
    assert json.loads((free.path / SUMMARY).read_text()) == {"final": 1}
    assert (free.path / MODEL).is_file()
    claimed = _claim(tmp_path / "claimed")
    claimed.finish({}, {"final": 1})
    assert (claimed.path / MODEL).is_file() and not (claimed.path / SUMMARY).exists()
    claimed.write_summary({"final": 1, "test": {}})
    assert json.loads((claimed.path / SUMMARY).read_text()) == {"final": 1, "test": {}}


def test_the_cli_writes_each_final_file_once(tmp_path, monkeypatch):
    writes = []
    real = F.atomic_write_bytes
    monkeypatch.setattr(F, "atomic_write_bytes",
                        lambda path, data: (writes.append(Path(path).name), real(path, data))[1])
    out = tmp_path / "run"
    assert main(["finetune", "--model", "resnet18", "--image-size", "16", "--classes", "0,1",
                 "--shots", "2", "--epochs", "1", "--batch-size", "4", "--no-progress",
                 "--out", str(out)]) == 0
    assert writes.count(SUMMARY) == 1 and writes.count(MODEL) == 1
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["test"]["count"] > 0 and len(summary["history"]) == 1  # both layers' parts


def test_a_failed_final_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    run = _claim(tmp_path / "run")
    run.write_summary({"epochs": 1})

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(F.os, "fsync", full_disk)
    with pytest.raises(OSError, match="summary.json"):  # the error names the file
        run.write_summary({"epochs": 2})
    with pytest.raises(OSError, match="run.json"):
        _claim(tmp_path / "run", {**SETTINGS, "lr": 0.2}, overwrite=True)
    monkeypatch.undo()
    assert json.loads((run.path / SUMMARY).read_text()) == {"epochs": 1}
    assert json.loads(run.record.read_text())["settings"] == SETTINGS
    assert sorted(p.name for p in run.path.iterdir()) == [RUN, SUMMARY]  # no temp files
