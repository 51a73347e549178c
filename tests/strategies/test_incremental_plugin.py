"""A new incremental method is one file: this one. A toy method, registered here alone, runs
through Incremental and the `ptcore incremental` command, composes with a built-in, shows in
the --method help, keeps its state in state.pt, and is refused in the combination it
declares incompatible, with its own message."""
import json

import pytest
import torch
from test_incremental_helpers import make, one_thread, scenario

from ptcore import engine
from ptcore.cli import main
from ptcore.models import get_head
from ptcore.strategies.incremental import METHODS, Method, Term, parse_method, register

PULL = 1000.0


class HeadAnchor(Method):
    """Pull the head's rows that existed before a task back to their values then: an L2
    penalty, PULL·Σ(W_old − W_before)², much like EWC with a uniform Fisher on the head."""
    name = "toyanchor"
    help = "toy: an L2 pull of the head's old rows to their values before the task"
    excludes = {"ewc": "toyanchor and ewc both anchor old weights; choose one"}
    state_key = "toyanchor"

    def __init__(self, options, parts):
        super().__init__(options, parts)
        self.anchor = None

    def before_task(self, run, t, train):
        old_rows = run.plan.spans[t][0]  # the rows of the classes learned before task t
        self.anchor = get_head(run.model).weight.detach()[:old_rows].clone()

    def loss_terms(self, run, step):
        old = get_head(run.model).weight[: len(self.anchor)]
        return {"anchor": Term((old - self.anchor).pow(2).sum(), PULL)}

    def state_dict(self):
        return {"anchor": self.anchor}

    def load_state_dict(self, state, device):
        self.anchor = state["anchor"].to(device)


@pytest.fixture
def toy():
    register(HeadAnchor)
    yield
    del METHODS[HeadAnchor.name]


def drift_of_the_first_rows(method: str, tmp_path=None) -> tuple[float, dict, object]:
    train, test = scenario(shots=10)
    with one_thread():
        inc = make(method, epochs=2, memory=30)
        before = get_head(inc.model).weight.detach()[:2].clone()
        torch.manual_seed(0)
        res = inc.fit(list(train[:3]), list(test[:3]), out_dir=tmp_path)
    after = get_head(inc.model).weight.detach()[:2]
    return (after - before).norm().item(), res, inc


def test_a_toy_method_registered_here_acts_through_incremental(toy, tmp_path):
    assert parse_method("toyanchor+replay") == {"toyanchor", "replay"}
    naive, naive_res, _ = drift_of_the_first_rows("naive")
    anchored, res, inc = drift_of_the_first_rows("toyanchor", tmp_path)
    # its term is in every trained task's history, and it held the old rows in place
    assert all("train_anchor" in epoch for history in res["history"][1:] for epoch in history)
    assert res["history"][0] == []  # the model's head already holds task 0's classes
    assert anchored < naive / 3, (anchored, naive)
    assert res["accuracy_matrix"] != naive_res["accuracy_matrix"]
    # its state is saved under its key, and a resumed run reads it back
    state = engine.load_checkpoint(tmp_path / "task_2" / "state.pt")
    torch.testing.assert_close(state["toyanchor"]["anchor"], inc.methods["toyanchor"].anchor)
    resumed = make("toyanchor", epochs=2, memory=30)
    resumed.fit(*[list(s[:3]) for s in scenario(shots=10)], out_dir=tmp_path, resume=True)
    torch.testing.assert_close(resumed.methods["toyanchor"].anchor,
                               inc.methods["toyanchor"].anchor)
    # with a built-in: both act
    _, both, _ = drift_of_the_first_rows("toyanchor+lwf")
    assert all({"train_anchor", "train_kd"} <= epoch.keys() for epoch in both["history"][2])
    for bad, match in [("toyanchor+ewc", "toyanchor and ewc both anchor old weights"),
                       ("toyanchor+naive", "'naive' cannot be combined")]:
        with pytest.raises(ValueError, match=match):
            parse_method(bad)


def test_a_toy_method_registered_here_runs_from_the_command_line(toy, tmp_path, capsys):
    common = ["--model", "mobilenet_v3_small", "--data", "digits", "--image-size", "16",
              "--data-classes", "0,1,2,3", "--tasks", "0,1;2,3", "--shots", "4",
              "--test-fraction", "0.05", "--epochs", "1", "--batch-size", "16",
              "--no-progress"]
    assert main(["incremental", "--method", "toyanchor", "--out", str(tmp_path / "toy")]
                + common) == 0
    res = json.loads((tmp_path / "toy" / "results.json").read_text())
    assert res["method"] == "toyanchor"
    assert all("train_anchor" in epoch for epoch in res["history"][1])
    assert main(["incremental", "--method", "toyanchor+ewc", "--out", str(tmp_path / "no")]
                + common) == 2
    assert "toyanchor and ewc both anchor old weights" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    with pytest.raises(SystemExit):
        main(["incremental", "--help"])
    assert "an L2 pull of the head's old rows" in " ".join(capsys.readouterr().out.split())
