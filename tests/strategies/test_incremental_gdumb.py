"""GDumb: the greedy sampler's balance and budget, a model that depends on the memory alone
(retrained from the initial weights: equal to training those on the memory by hand), what
it learns on the digits protocol against naive fine-tuning, resume, and the CLI."""
import json

import pytest
import torch
from test_incremental_helpers import SEED, make, one_thread, pretrained, run, scenario

from ptcore import engine
from ptcore.cli import main
from ptcore.models import expand_head, get_head
from ptcore.strategies._param_groups import layer_decay_groups
from ptcore.strategies.incremental.gdumb import GreedyMemory, fresh_head
from ptcore.strategies.incremental.memory import union


def test_greedy_memory_fills_then_evicts_from_the_largest_class():
    memory = GreedyMemory(4, seed=0)
    memory.add(0, torch.zeros(5, dtype=torch.long))
    assert memory.counts() == {0: 4}
    memory.add(1, torch.ones(3, dtype=torch.long))  # class 1 takes until it holds 4 / 2
    assert memory.counts() == {0: 2, 1: 2}
    # 4 / 3 each: the first new sample evicts from row 0 (the lowest of the tie), the second
    # from row 1, the third finds class 2 at its share
    memory.add(2, torch.full((10,), 2))
    assert memory.counts() == {0: 1, 1: 1, 2: 2}
    with pytest.raises(ValueError, match="row 2 came with task 2"):
        memory.add(3, torch.tensor([2]))
    with pytest.raises(ValueError, match="memory must be a positive int"):
        GreedyMemory(0)


def test_greedy_memory_is_balanced_within_its_budget_and_seeded():
    sizes = [[40, 3], [25, 60], [8]]  # class sizes per task: rows 1 and 4 below their share
    g = torch.Generator().manual_seed(0)
    tasks, row = [], 0
    for task in sizes:
        labels = torch.cat([torch.full((n,), row + k) for k, n in enumerate(task)])
        tasks.append(labels[torch.randperm(len(labels), generator=g)])
        row += len(task)

    def fill(seed):
        memory = GreedyMemory(50, seed=seed)
        for t, labels in enumerate(tasks):
            memory.add(t, labels)
            assert len(memory) == min(50, sum(map(sum, sizes[: t + 1])))
        for r, (t, positions) in memory.kept.items():
            assert len(set(positions)) == len(positions)
            assert (tasks[t][positions] == r).all()  # positions of that class in its task
        return memory

    memory = fill(0)
    counts = memory.counts()
    assert sum(counts.values()) == 50
    assert counts[1] == 3 and counts[4] == 8  # smaller than their share: every sample kept
    big = [counts[r] for r in (0, 2, 3)]
    assert max(big) - min(big) <= 1  # the rest split the remaining budget evenly
    assert fill(0).kept == memory.kept and fill(1).kept != memory.kept


def test_fresh_head_rows_do_not_depend_on_the_width_and_keep_the_initial_rows():
    narrow, wide = torch.nn.Linear(8, 4), torch.nn.Linear(8, 6)
    fresh_head(narrow, 7)
    fresh_head(wide, 7)
    assert torch.equal(wide.weight[:4], narrow.weight) and torch.equal(wide.bias[:4], narrow.bias)
    initial = {"weight": torch.ones(2, 8), "bias": torch.zeros(2)}
    fresh_head(wide, 7, initial)
    assert torch.equal(wide.weight[:2], initial["weight"]) and wide.bias[:2].eq(0).all()
    assert torch.equal(wide.weight[2:4], narrow.weight[2:])
    bound = 1 / 8 ** 0.5  # PyTorch's Linear initialisation: U(±1/√fan_in) for both
    assert wide.weight[2:].abs().max() <= bound and wide.bias[2:].abs().max() <= bound


def test_gdumb_retrains_from_the_initial_weights_on_the_memory_alone():
    train, test = scenario()
    train, test = list(train[:3]), list(test[:3])
    with one_thread():
        inc = make("gdumb", memory=40, epochs=2)
        torch.manual_seed(SEED)
        inc.fit(train, test)
        gdumb = inc.methods["gdumb"]
        counts = gdumb.memory.counts()  # 40 over 6 rows
        assert sum(counts.values()) == 40 and sorted(counts.values()) == [6, 6, 7, 7, 7, 7]
        # The model after task 2 by hand: the initial (pretrained) weights with its two head
        # rows, four fresh rows as gdumb draws them, trained on the memory alone.
        model = pretrained()
        expand_head(model, 4)
        gdumb.reset(model, keep_rows=True)
        assert torch.equal(get_head(model).weight[:2], get_head(pretrained()).weight)
        torch.manual_seed(SEED * 100_003 + 2 + 110_001)  # gdumb's seed of dropout at task 2
        data = union(gdumb.memory.datasets([inc.plan.remap(d) for d in train]))
        assert len(data) == 40
        optimizer = engine.make_optimizer(layer_decay_groups(model, 3e-3, 1.0, 0.0))
        engine.fit(model, data, optimizer, epochs=2, batch_size=16, schedule="cosine",
                   seed=SEED + 2, progress=False)
    for (name, a), b in zip(inc.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_gdumb_beats_naive_on_every_seed():
    """At the protocol's 4 epochs a memory of 100 samples is undertrained, yet ahead of
    naive on every seed; at 16 (the paper trains to convergence on the memory) it is near
    replay (docs/incremental.md)."""
    for seed in (0, 1, 2):
        naive, gdumb = run("naive", seed=seed), run("gdumb", seed=seed)
        assert gdumb["average_incremental_accuracy"] > naive["average_incremental_accuracy"] + 0.05
        assert gdumb["forgetting"] < naive["forgetting"] / 2
    naive, gdumb = run("naive"), run("gdumb", epochs=16)
    assert gdumb["average_incremental_accuracy"] > naive["average_incremental_accuracy"] + 0.35
    assert gdumb["final_accuracy"] > naive["final_accuracy"] + 0.4


def test_gdumb_under_the_task_protocol():
    naive, gdumb = run("naive", "task"), run("gdumb", "task", epochs=16)
    assert gdumb["average_incremental_accuracy"] > naive["average_incremental_accuracy"] + 0.02
    assert gdumb["forgetting"] < naive["forgetting"]


class Interrupt(Exception):
    pass


def test_gdumb_resumes_at_its_task_and_epoch(tmp_path, monkeypatch):
    train, test = scenario()
    train, test = list(train[:3]), list(test[:3])
    kw = {"epochs": 2, "memory": 30}
    with one_thread():
        reference = make("gdumb", **kw)
        torch.manual_seed(0)
        expected = reference.fit(train, test)

        real_fit = engine.fit

        def interrupted_fit(*args, **kwargs):
            def watch(epoch, model):
                if (kwargs["meta"]["task"], epoch) == (2, 1):
                    raise Interrupt

            return real_fit(*args, on_epoch_start=[watch], **kwargs)

        monkeypatch.setattr(engine, "fit", interrupted_fit)
        torch.manual_seed(0)
        with pytest.raises(Interrupt):
            make("gdumb", **kw).fit(train, test, out_dir=tmp_path)
        monkeypatch.setattr(engine, "fit", real_fit)
        resumed = make("gdumb", **kw)
        torch.manual_seed(123)  # a resumed process starts from another generator state
        got = resumed.fit(train, test, out_dir=tmp_path, resume=True)
    assert got["accuracy_matrix"] == expected["accuracy_matrix"]
    for a, b in zip(resumed.model.state_dict().values(), reference.model.state_dict().values()):
        assert torch.equal(a, b)
    state, ref = resumed.methods["gdumb"].state_dict(), reference.methods["gdumb"].state_dict()
    assert state["memory"] == ref["memory"]
    assert all(torch.equal(state["initial"][k], v) for k, v in ref["initial"].items())


def test_gdumb_from_the_command_line(tmp_path, capsys):
    common = ["--model", "mobilenet_v3_small", "--data", "digits", "--image-size", "16",
              "--classes", "0,1,2,3", "--tasks", "0,1;2,3", "--shots", "4", "--test", "0.05",
              "--epochs", "1", "--batch-size", "8", "--memory", "6", "--no-progress"]
    with one_thread():
        assert main(["incremental", "--method", "gdumb", "--out", str(tmp_path / "g")]
                    + common) == 0
    results = json.loads((tmp_path / "g" / "results.json").read_text())
    assert results["method"] == "gdumb" and results["exemplars"] == 6  # its greedy memory
    assert main(["incremental", "--method", "gdumb+replay", "--out", str(tmp_path / "no")]
                + common) == 2
    assert "'gdumb' cannot be combined" in capsys.readouterr().err
    assert main(["incremental", "--method", "gdumb", "--out", str(tmp_path / "small")]
                + common + ["--memory", "3"]) == 2
    assert "gdumb needs a sample of each" in capsys.readouterr().err
