"""The mixed-batch replay schedule (replay_schedule="mixed"): an epoch is the task's own data,
each batch of B of its samples joined by B exemplars drawn from the memory; the draws are a
function of (seed, epoch, rank, batch), so runs repeat and resume exactly; and it learns."""
import math

import pytest
import torch
from test_incremental_helpers import make, one_thread, run, scenario

from ptcore import engine
from ptcore.engine.loaders import make_loader
from ptcore.engine.sampling import EpochBatches, SeededBatches
from ptcore.strategies.incremental.replay import MixedBatches


SHOTS = 10  # 20 samples a task: batches of 8 new samples and 8 exemplars


class Interrupt(Exception):
    pass


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():  # these models are too small to gain from more, on a shared machine
        yield


def recorded_steps(monkeypatch, method: str, tasks: int = 2, **kw) -> tuple:
    """(run, {task: (data, [labels of each step's batch])}) of ``method`` over ``tasks``."""
    inc = make(method, **kw)  # first: the pretraining fits too
    real_fit, seen = engine.fit, {}

    def fit(model, data, optimizer, *, step_fn, meta, **rest):
        labels = []
        seen[meta["task"]] = (data, labels)

        def step(model, batch):
            labels.append(batch[1].clone())
            return step_fn(model, batch)

        return real_fit(model, data, optimizer, step_fn=step, meta=meta, **rest)

    monkeypatch.setattr(engine, "fit", fit)
    train, test = scenario(shots=SHOTS)
    inc.fit(list(train[:tasks]), list(test[:tasks]))
    return inc, seen


@pytest.mark.parametrize("method", ["replay", "lwf+replay", "bic+replay", "der+replay",
                                    "er-ace"])
def test_each_batch_is_b_new_samples_and_b_exemplars_and_the_epoch_is_the_new_data(
        monkeypatch, method):
    inc, seen = recorded_steps(monkeypatch, method, replay_schedule="mixed", epochs=2,
                               batch_size=8, memory=20)
    train, _ = scenario(shots=SHOTS)
    data, steps = seen[1]  # task 0 is the pretrained head's: not trained
    held = sum(len(p) for t, p in inc.memory.heldout.values() if t == 1)  # bic's slice
    assert isinstance(data, MixedBatches) and len(data) == len(train[1]) - held
    assert len(steps) == 2 * math.ceil(len(data) / 8)  # the new data's steps, not the union's
    for y in steps:
        b = len(y) // 2
        assert set(y[:b].tolist()) <= {2, 3} and set(y[b:].tolist()) <= {0, 1}
        assert len(y) == 2 * b
    assert sum(len(y) // 2 for y in steps) == 2 * len(data)  # every new sample, each epoch
    # the exemplars of both old classes come back, drawn anew at each batch
    assert {int(c) for y in steps for c in y[len(y) // 2:]} == {0, 1}
    assert len({tuple(y[len(y) // 2:].tolist()) for y in steps}) > 1


def test_the_union_schedule_trains_on_new_data_and_memory_together(monkeypatch):
    inc, seen = recorded_steps(monkeypatch, "replay", epochs=2, batch_size=8, memory=20)
    data, steps = seen[1]
    train, _ = scenario(shots=SHOTS)
    assert len(data) == len(train[1]) + 20 and len(steps) == 2 * math.ceil(len(data) / 8)


def test_draws_are_without_replacement_and_the_same_in_a_worker():
    x = torch.arange(30.0)[:, None]
    data = MixedBatches(torch.utils.data.TensorDataset(x, (x[:, 0] >= 20).long()), 20)
    assert len(data) == 20 and data[19][0].item() == 19
    with pytest.raises(IndexError):
        data[20]

    def batches(workers):
        order = EpochBatches(data, 8, seed=0, drop_last=False)  # the training loader's
        order.set_epoch(3)
        return [b[0][:, 0] for b in make_loader(SeededBatches(data), batch_sampler=order,
                                                num_workers=workers)]

    here = batches(0)
    assert [len(b) for b in here] == [16, 16, 8]
    assert sorted(torch.cat([b[: len(b) // 2] for b in here]).tolist()) == list(range(20))
    for b in here:  # 8 distinct exemplars of the 10, and 4 (all) for the batch of 4
        drawn = b[len(b) // 2:].tolist()
        assert len(set(drawn)) == len(drawn) and all(20 <= v < 30 for v in drawn)
    state = torch.get_rng_state()
    assert all(torch.equal(a, b) for a, b in zip(here, batches(0)))
    assert torch.equal(torch.get_rng_state(), state)  # loading draws nothing of the process's
    assert all(torch.equal(a, b) for a, b in zip(here, batches(1)))


@pytest.mark.parametrize("method, error", [("naive", "'naive' has none"),
                                           ("a-gem", "'a-gem' has none"),
                                           ("ewc+lwf", "has none")])
def test_mixed_needs_a_part_that_trains_on_the_memory(method, error):
    with pytest.raises(ValueError, match=f"replay_schedule='mixed' .*{error}"):
        make(method, replay_schedule="mixed")
    with pytest.raises(ValueError, match="replay_schedule must be one of"):
        make("replay", replay_schedule="stream")


def test_same_seed_same_weights():
    train, test = scenario(shots=SHOTS)

    def weights():
        inc = make("lwf+replay", replay_schedule="mixed", epochs=1, memory=20)
        torch.manual_seed(0)
        inc.fit(list(train[:3]), list(test[:3]))
        return inc.model.state_dict()

    a, b = weights(), weights()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_in_the_middle_of_an_epoch_is_exact(tmp_path, monkeypatch):
    train, test = scenario(shots=SHOTS)
    train, test = list(train[:3]), list(test[:3])
    kw = {"replay_schedule": "mixed", "epochs": 2, "batch_size": 8, "memory": 20}
    reference = make("der+replay", **kw)  # save_every changes nothing that is trained
    kw["save_every"] = 1
    torch.manual_seed(0)
    expected = reference.fit(train, test)

    real_fit = engine.fit

    def fit(model, data, optimizer, *, step_fn, meta, **rest):
        calls = []

        def step(model, batch):
            calls.append(1)
            if meta["task"] == 2 and len(calls) == 6:  # epoch 1's 3rd batch (3 per epoch)
                raise Interrupt
            return step_fn(model, batch)

        return real_fit(model, data, optimizer, step_fn=step, meta=meta, **rest)

    interrupted = make("der+replay", **kw)
    monkeypatch.setattr(engine, "fit", fit)
    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        interrupted.fit(train, test, out_dir=tmp_path)
    monkeypatch.undo()
    ckpt = engine.load_checkpoint(tmp_path / "task_2" / engine.CHECKPOINT)
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 2)
    with pytest.raises(ValueError, match="resume with the same method"):  # not the union's
        make("der+replay", **{**kw, "replay_schedule": "union"}).fit(
            train, test, out_dir=tmp_path, resume=True)
    resumed = make("der+replay", **kw)
    torch.manual_seed(12345)  # a new process: its generators are elsewhere
    got = resumed.fit(train, test, out_dir=tmp_path, resume=True)
    assert got["accuracy_matrix"] == expected["accuracy_matrix"]
    for (name, a), b in zip(resumed.model.state_dict().items(),
                            reference.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_mixed_replay_beats_naive_on_every_seed():
    for seed in (0, 1, 2):
        naive, mixed = run("naive", seed=seed), run("replay", seed=seed, replay_schedule="mixed")
        assert mixed["average_incremental_accuracy"] > naive["average_incremental_accuracy"] + 0.2
        assert mixed["forgetting"] < naive["forgetting"] / 2
        assert mixed["exemplars"] == 100


def test_cli_replay_schedule(tmp_path):
    from ptcore.cli import main

    args = ["incremental", "--model", "mobilenet_v3_small", "--data", "digits",
            "--image-size", "16", "--tasks", "0,1;2,3", "--shots", "4", "--test", "0.05",
            "--method", "replay", "--memory", "8", "--epochs", "1", "--batch-size", "4",
            "--replay-schedule", "mixed", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    state = engine.load_checkpoint(tmp_path / "task_1" / "state.pt")
    assert state["plan"]["replay_schedule"] == "mixed"
    assert [len(h) for h in state["history"]] == [1, 1]
