import re

import pytest

from ptcore.report import (accuracy_curve, accuracy_heatmap, learning_curves, method_comparison,
                           text_table, write_report)
from ptcore.report.findings import findings

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_embeds_every_plot_it_wrote(results, tmp_path):
    report = write_report(results, tmp_path).read_text()
    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert set(embedded) == {p.name for p in tmp_path.glob("*.png")}
    assert {"comparison.png", "finetune_learning_curves.png", "incremental_heatmap_naive.png",
            "incremental_heatmap_replay.png", "incremental_accuracy_curve.png"} <= set(embedded)
    for name in embedded:
        assert (tmp_path / name).read_bytes().startswith(PNG)
    for stage in ("finetune", "incremental", "distill"):
        assert f"## {stage}" in report


def test_report_numbers_come_from_the_results(results, tmp_path):
    results["distill"]["kd_online"]["accuracy"] = 0.6543
    report = write_report(results, tmp_path).read_text()
    assert "| kd_online | 65.4% |" in report
    assert "`kd_online` vs `hard_labels`: +5.4 points" in report
    assert "`replay` vs `naive`: average incremental accuracy +21.0 points" in report
    assert "teacher accuracy: 97.5% · labelled: 25 · seconds: 3.2s" in report


def test_findings_say_when_a_method_did_not_help(results):
    results["distill"]["kd_online"]["accuracy"] = 0.5
    assert findings("distill", results["distill"])[0].startswith(
        "`kd_online` vs `hard_labels`: -10.0 points")


def test_cached_probe_speedup_is_reported(results):
    text = " ".join(findings("finetune", results["finetune"]))
    assert "0.010s per epoch vs 0.400s" in text and "40.0× faster" in text


def test_text_table_aligns_and_marks_missing(results):
    lines = text_table("finetune", results["finetune"]).splitlines()
    assert lines[0].split()[:3] == ["method", "accuracy", "train"]
    assert len({len(line) for line in lines}) == 1
    assert "–" in lines[1]  # scratch has no uncached epoch time


def test_plots_are_pngs(tmp_path):
    paths = [
        accuracy_heatmap([[1.0, None], [0.5, 0.9]], tmp_path / "h.png", task_labels=["a", "b"]),
        accuracy_curve({"naive": [1.0, 0.5]}, tmp_path / "c.png"),
        learning_curves({"m": [{"seconds": 1.0, "val_accuracy": 0.5}]}, tmp_path / "l.png"),
        method_comparison({"s": {"a": 0.5, "b": 0.7}}, tmp_path / "m.png",
                          times={"s": {"a": 1.0}}),
    ]
    for p in paths:
        assert p.read_bytes().startswith(PNG)


@pytest.mark.parametrize("call, message", [
    (lambda p: accuracy_heatmap([[1.0, None]], p), "square"),
    (lambda p: accuracy_heatmap([[1.0]], p, task_labels=["a", "b"]), "2 names for 1 tasks"),
    (lambda p: accuracy_curve({}, p), "at least one"),
    (lambda p: learning_curves({"m": [{"seconds": 1.0}]}, p), "val_accuracy"),
    (lambda p: method_comparison({"s": {}}, p), "at least one method"),
])
def test_plot_input_errors(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_seen_accuracy_curve_prefers_the_strategy_numbers():
    from ptcore.report.markdown import seen_accuracy_curve

    matrix = [[1.0, None], [0.5, 0.9]]
    assert seen_accuracy_curve({"accuracy_matrix": matrix}) == [1.0, 0.7]
    assert seen_accuracy_curve({"accuracy_matrix": matrix,
                                "accuracy_after_task": [1.0, 0.6]}) == [1.0, 0.6]
