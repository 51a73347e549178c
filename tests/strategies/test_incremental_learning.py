"""What each method learns on digits: 5 tasks of 2 classes, 30 training images per class,
from a model trained on the first task (digits 0 and 1). Runs are shared between tests
(test_incremental_helpers.run). docs/incremental.md has the matrices and the seeds."""
import json

import pytest
import torch
from test_incremental_helpers import make, mean_over_seeds, pretrained, run, scenario

from ptcore.data import LabeledSubset


def test_naive_forgets_the_first_task():
    r = run("naive")
    R = r["accuracy_matrix"]
    assert R[0][0] > 0.9                      # the pretrained model knew task 1 ...
    assert R[-1][0] < 0.2                     # ... and plain fine-tuning wiped it out
    assert all(R[t][t] > 0.6 for t in range(1, 5))  # while learning every new task
    assert r["forgetting"] > 0.6
    assert r["classes"] == list(range(10)) and r["history"][0] == []  # task 1: nothing to learn


def test_replay_forgets_far_less_and_raises_average_accuracy_by_tens_of_points():
    naive, replay = run("naive"), run("replay")
    assert replay["accuracy_matrix"][-1][0] > 0.5
    assert replay["average_incremental_accuracy"] > naive["average_incremental_accuracy"] + 0.25
    assert replay["forgetting"] < naive["forgetting"] / 3
    assert replay["exemplars"] == 100  # the whole budget: 10 per class


def test_lwf_with_replay_beats_naive_in_the_class_incremental_setting():
    naive, both = run("naive"), run("lwf+replay")
    assert both["average_incremental_accuracy"] > naive["average_incremental_accuracy"] + 0.25
    assert both["forgetting"] < naive["forgetting"] / 3


def test_ewc_forgets_less_than_naive_when_the_task_is_known():
    ewc = run("ewc", "task")
    assert ewc["protocol"] == "task" and ewc["accuracy_matrix"] == \
        ewc["task_incremental"]["accuracy_matrix"]
    # Seeds 0-2, forgetting of naive / ewc: 0.078 / 0.036, 0.194 / 0.102, 0.130 / 0.011
    # (AVX-512); 0.147 / 0.036, 0.161 / 0.086, 0.219 / -0.005 (AVX2).
    assert mean_over_seeds("ewc", "forgetting") < 0.5 * mean_over_seeds("naive", "forgetting")
    assert (mean_over_seeds("ewc", "average_incremental_accuracy")
            > mean_over_seeds("naive", "average_incremental_accuracy") + 0.02)


def test_lwf_keeps_the_old_head_s_outputs_on_new_data():
    """What LwF optimises: after learning task 2, the old classes' predictions on task 2's
    images stay close to the snapshot's, unlike plain fine-tuning's. (Whether that keeps
    old-task accuracy depends on how alike the tasks are: see docs/incremental.md.)
    Naive's drift over LwF's: 2.6, 6.6 and 6.3 at seeds 0, 1, 2 (one-thread pretraining)."""
    train, test = scenario()
    new = LabeledSubset(train[1], torch.arange(len(train[1])))
    x = torch.stack([new[i][0] for i in range(len(new))])
    with torch.no_grad():
        before = pretrained().eval()(x).log_softmax(-1)

    def drift(method):
        inc = make(method, lwf_weight=4.0)
        inc.fit(train[:2], test[:2])
        inc.model.eval()
        with torch.no_grad():
            after = inc.model(x)[:, :2].log_softmax(-1)
        return torch.nn.functional.kl_div(after, before, log_target=True,
                                          reduction="batchmean").item()

    assert drift("lwf") < drift("naive") / 2


def test_ncm_and_simplecil_classify_by_class_means():
    naive, ncm, simple = run("naive"), run("replay+ncm"), run("simplecil")
    assert ncm["average_incremental_accuracy"] > naive["average_incremental_accuracy"] + 0.25
    # SimpleCIL never trains: a task's prototypes and its task-incremental accuracy are fixed.
    Rt = simple["task_incremental"]["accuracy_matrix"]
    assert all(Rt[t][k] == Rt[k][k] for k in range(5) for t in range(k, 5))
    assert all(h == [] for h in simple["history"])
    assert simple["average_incremental_accuracy"] > naive["average_incremental_accuracy"]


def test_results_files_and_evaluate(tmp_path):
    train, test = scenario()
    inc = make("replay", epochs=1)
    res = inc.fit(train[:3], test[:3], out_dir=tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["accuracy_matrix"] == res["accuracy_matrix"]
    assert saved["accuracy_matrix"][0][1:] == [None, None]
    for png in ("accuracy_matrix.png", "accuracy_curve.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "task_2").iterdir()) == ["metrics.jsonl",
                                                                        "state.pt"]
    # evaluate() on task 1's test images alone reproduces the last row's first entry
    assert inc.evaluate(test[0])["class_incremental"] == pytest.approx(res["accuracy_matrix"][2][0])
    with pytest.raises(ValueError, match=r"classes \[6, 7\] that have not been learned"):
        inc.evaluate(test[3])
