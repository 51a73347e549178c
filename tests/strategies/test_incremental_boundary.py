"""Incremental resume at a task boundary is exact: interrupted right after task t's
state.pt is written, a resumed run (in a process whose random generators have moved on)
ends bit-identical to an uninterrupted one, because state.pt carries the RNG state that
draws the next task's new head rows and batches. A hostile state.pt runs no code."""
import random
import sys
from pathlib import Path

import pytest
import torch
from test_incremental_helpers import make, scenario

from ptcore.engine import RunFolderError, UnreadableFileError
from ptcore.strategies import Incremental

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from test_hostile_files import hostile_file  # noqa: E402


class Interrupt(Exception):
    pass


def test_resume_right_after_a_task_boundary_is_bit_identical(tmp_path, monkeypatch):
    train, test = scenario(shots=10)
    train, test = train[:3], test[:3]
    kw = {"epochs": 1, "memory": 20}
    reference = make("lwf+replay", **kw)
    torch.manual_seed(0)  # both runs start from the same generator state
    expected = reference.fit(train, test)

    real_save = Incremental._save

    def save_then_die(self, out, t):
        real_save(self, out, t)
        if t == 1:
            raise Interrupt  # killed right after task 1 is saved

    monkeypatch.setattr(Incremental, "_save", save_then_die)
    interrupted = make("lwf+replay", **kw)
    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        interrupted.fit(train, test, out_dir=tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / "task_2").exists()
    with pytest.raises(RunFolderError, match="holds another incremental run"):
        make("lwf+replay", **kw).fit(train, test, out_dir=tmp_path)

    resumed = make("lwf+replay", **kw)
    torch.manual_seed(12345)  # a new process: its generators are not where the run left them
    random.seed(12345)
    got = resumed.fit(train, test, out_dir=tmp_path, resume=True)
    assert got["accuracy_matrix"] == expected["accuracy_matrix"]
    for (name, a), b in zip(resumed.model.state_dict().items(),
                            reference.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_hostile_state_file_runs_no_code(tmp_path):
    train, test = scenario()
    marker = tmp_path / "pwned"
    (tmp_path / "task_0").mkdir()
    hostile_file(tmp_path / "task_0" / "state.pt", marker, ptcore_checkpoint=True)
    with pytest.raises(UnreadableFileError, match="state.pt"):
        make("replay", epochs=1).fit(train[:2], test[:2], out_dir=tmp_path, resume=True)
    assert not marker.exists()
