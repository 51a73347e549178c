"""Incremental checkpoints: an interrupted sequence resumes at the task and epoch where it
stopped and ends exactly where an uninterrupted run ends; the CLI runs and resumes too."""
import json

import pytest
import torch
from test_incremental_helpers import make, scenario

from ptcore import engine
from ptcore.cli import main


class Interrupt(Exception):
    pass


# Every kind of state: teacher, memory, Fisher; held-out slice, bias layers, stored logits;
# MAS importance, and A-GEM drawing its reference batches from the global generator.
@pytest.mark.parametrize("method", ["lwf+replay+ewc", "bic+der+replay", "mas+a-gem"])
def test_interrupted_sequence_resumes_at_its_task_and_epoch(tmp_path, monkeypatch, method):
    train, test = scenario()
    train, test = train[:3], test[:3]
    kw = {"epochs": 2, "batch_size": 32, "ewc_lambda": 10.0}
    reference = make(method, **kw)
    torch.manual_seed(0)  # the first run in a process starts from another generator state
    expected = reference.fit(train, test)

    real_fit = engine.fit
    epochs_run = []

    def fit(*args, stop=None, **kwargs):
        task = kwargs["meta"]["task"]

        def watch(epoch, model):
            if (task, epoch) == stop:
                raise Interrupt
            epochs_run.append((task, epoch))

        return real_fit(*args, on_epoch_start=[watch], **kwargs)

    monkeypatch.setattr(engine, "fit", lambda *a, **k: fit(*a, stop=(2, 1), **k))
    interrupted = make(method, **kw)
    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        interrupted.fit(train, test, out_dir=tmp_path)
    assert (tmp_path / "task_1" / "state.pt").is_file()
    assert engine.load_checkpoint(tmp_path / "task_2" / engine.CHECKPOINT)["epoch"] == 1
    assert not (tmp_path / "results.json").exists()

    epochs_run.clear()
    monkeypatch.setattr(engine, "fit", lambda *a, **k: fit(*a, **k))
    resumed = make(method, **kw)
    got = resumed.fit(train, test, out_dir=tmp_path, resume=True)
    assert epochs_run == [(2, 1)]  # tasks 0 and 1 and epoch 0 of task 2 are not redone
    assert got["accuracy_matrix"] == expected["accuracy_matrix"]
    for a, b in zip(resumed.model.state_dict().values(), reference.model.state_dict().values()):
        torch.testing.assert_close(a, b)
    for name, part in reference._parts_with_state().items():
        if part is not None:
            assert_same(resumed._parts_with_state()[name].state_dict(), part.state_dict())


def assert_same(a, b):
    """Nested states equal: tensors close, everything else equal."""
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_resume_refuses_another_run(tmp_path):
    train, test = scenario()
    make("replay", epochs=1).fit(train[:2], test[:2], out_dir=tmp_path)
    with pytest.raises(ValueError, match="resume with the same method"):
        make("naive", epochs=1).fit(train[:2], test[:2], out_dir=tmp_path, resume=True)


def test_cli_runs_and_resumes(tmp_path, capsys):
    args = ["incremental", "--model", "mobilenet_v3_small", "--data", "digits",
            "--image-size", "16", "--tasks", "5", "--shots", "4", "--test", "0.05",
            "--method", "replay", "--memory", "20", "--epochs", "1", "--batch-size", "16",
            "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "class-incremental accuracy matrix" in out and "forgetting" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["tasks"] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert res["exemplars"] == 20 and len(res["accuracy_matrix"]) == 5
    assert main(args + ["--resume"]) == 0  # everything is done: nothing is trained again
    assert json.loads((tmp_path / "results.json").read_text())["accuracy_matrix"] == \
        res["accuracy_matrix"]


def test_cli_from_a_toml_config(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "inc.toml"
    cfg.write_text(f'stage = "incremental"\nout = "{out}"\n[model]\nname = "mobilenet_v3_small"\n'
                   "[data]\nimage_size = 16\nclasses = [0, 1, 2, 3]\nshots = 4\n"
                   "tasks = [[0, 1], [2, 3]]\ntest = 0.05\n"
                   "[engine]\nepochs = 1\nbatch_size = 16\n"
                   '[strategy]\nmethod = "replay"\nmemory = 8\ntemperature = 3.0\n')
    assert main(["incremental", "--config", str(cfg), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["tasks"] == [[0, 1], [2, 3]] and res["exemplars"] == 8
    assert "class-incremental accuracy matrix" in capsys.readouterr().out


def test_cli_tasks_are_a_count_or_class_lists():
    from ptcore.commands.incremental import _tasks

    assert _tasks("5") == 5
    assert _tasks("0,1,2;3,4") == [[0, 1, 2], [3, 4]]
    assert _tasks("7,8") == [[7, 8]]
