import json

import pytest

from ptcore.report import read_results, validate_results, write_results


def test_valid_document_round_trips(results, tmp_path):
    path = write_results(tmp_path / "results.json", results)
    assert read_results(path) == json.loads(json.dumps(results))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["finetune"]["scratch"].update(accuracy=80.0), r"finetune\.scratch\.accuracy.*\[0"),
    (lambda r: r["finetune"]["scratch"].update(accuracy=float("nan")), "finite"),
    (lambda r: r["finetune"]["scratch"].pop("train_seconds"), "lacks 'train_seconds'"),
    (lambda r: r["distill"]["kd_online"].update(accuracy=True), "finite number"),
    (lambda r: r["incremental"]["naive"].pop("forgetting"), "lacks 'forgetting'"),
    (lambda r: r["incremental"]["naive"].update(forgetting=1.5), "forgetting"),
    (lambda r: r["incremental"]["naive"]["accuracy_matrix"][1].pop(), "square"),
    (lambda r: r["incremental"]["naive"]["accuracy_matrix"][1].__setitem__(0, None),
     r"accuracy_matrix\[1\]\[0\]"),
    (lambda r: r.update(version=2), "version"),
    (lambda r: r.pop("environment"), "environment"),
    (lambda r: r.update(distill={}), "non-empty"),
    (lambda r: [r.pop(s) for s in ("finetune", "incremental", "distill")], "no stage"),
])
def test_bad_documents_are_rejected_with_the_path(results, edit, message):
    edit(results)
    with pytest.raises(ValueError, match=message):
        validate_results(results)


def test_failed_write_keeps_the_old_file(results, tmp_path):
    path = write_results(tmp_path / "results.json", results)
    before = path.read_bytes()
    results["distill"]["kd_online"]["accuracy"] = -0.1
    with pytest.raises(ValueError):
        write_results(path, results)
    assert path.read_bytes() == before


def test_single_task_forgetting_may_be_null(results):
    results["incremental"] = {"naive": {"average_incremental_accuracy": 0.9,
                                        "final_accuracy": 0.9, "forgetting": None,
                                        "train_seconds": 1.0, "accuracy_matrix": [[0.9]]}}
    validate_results(results)


def test_read_rejects_broken_json(tmp_path):
    (tmp_path / "r.json").write_text('{"format": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        read_results(tmp_path / "r.json")
