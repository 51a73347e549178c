"""`ptcore distill-lm` end to end on tiny Llama checkpoints and the standard library's
docstrings: a teacher trained (by the command's labels mode) on other text than the
student's, then the same student from a small text three ways; online and offline
distillation both reach a lower held-out cross-entropy than the labels alone, the saved
student loads with from_pretrained, a second offline run trains from the store with the
teacher gone, and the run folder follows the other commands' rules (refusal, resume,
overwrite)."""
import json
import shutil
from types import SimpleNamespace

import pytest

from tests.integrations.hf_fixtures import bpe_tokenizer, stdlib_text, tiny

from ptcore.cli import main

COMMON = ["--length", "32", "--batch-size", "16", "--lr", "5e-3", "--no-progress"]


def _run(*argv) -> int:
    return main(["distill-lm", *map(str, argv), *COMMON])


def _summary(out) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A trained teacher, an untrained smaller student and the student's text."""
    root = tmp_path_factory.mktemp("lm")
    big = stdlib_text(("argparse", "collections", "functools", "typing"))
    small = stdlib_text(("json", "textwrap"))
    tokenizer = bpe_tokenizer(big + small, vocab=384)
    (root / "big.txt").write_text(big)
    (root / "small.txt").write_text(small)
    for name, model in (("teacher0", tiny("llama", len(tokenizer), seed=0, hidden=64)),
                        ("student0", tiny("llama", len(tokenizer), seed=1, layers=1))):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    assert _run("--mode", "labels", "--student", root / "teacher0", "--data", root / "big.txt",
                "--out", root / "teacher", "--epochs", 4) == 0
    return SimpleNamespace(root=root, teacher=root / "teacher" / "student",
                          student=root / "student0", data=root / "small.txt",
                          tokenizer=tokenizer)


def _student(lm, out, mode, *extra, epochs=8):
    assert _run("--mode", mode, "--student", lm.student, "--data", lm.data, "--out", out,
                "--epochs", epochs, "--hard-weight", 1, "--topk", 16, *extra) == 0
    return _summary(out)


def test_online_and_offline_students_beat_the_labels_only_student(lm, tmp_path):
    from transformers import AutoModelForCausalLM

    from ptcore.integrations.hf import held_out_loss
    from ptcore.integrations.hf.data import held_out_split, token_windows

    teacher = tmp_path / "teacher"  # a copy that the second offline run will not have
    shutil.copytree(lm.teacher, teacher)
    labels = _student(lm, tmp_path / "labels", "labels")
    online = _student(lm, tmp_path / "online", "online", "--teacher", teacher)
    offline = _student(lm, tmp_path / "offline", "offline", "--teacher", teacher,
                       "--store", tmp_path / "store")
    assert online["held_out_loss"] < labels["held_out_loss"] - 0.05
    assert offline["held_out_loss"] < labels["held_out_loss"] - 0.05
    assert offline["store"]["bytes_per_token"] == 8 * 16

    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "online" / "student")
    windows = token_windows([lm.data.read_text()], lm.tokenizer, 32)
    assert held_out_loss(saved, held_out_split(windows, 0.15)[1], batch_size=16) == \
        pytest.approx(online["held_out_loss"], rel=1e-6)

    shutil.rmtree(teacher)  # the second student reads the store alone
    again = _student(lm, tmp_path / "again", "offline", "--store", tmp_path / "store")
    assert again["store"]["fingerprint"] == offline["store"]["fingerprint"]
    assert again["held_out_loss"] == offline["held_out_loss"]


def test_the_run_folder_resumes_refuses_and_overwrites_like_the_other_commands(lm, tmp_path,
                                                                                capsys):
    args = ("--teacher", lm.teacher, "--schedule", "constant")  # the same rates when resumed
    straight = _student(lm, tmp_path / "straight", "online", *args, epochs=2)
    _student(lm, tmp_path / "split", "online", *args, epochs=1)
    assert _run("--mode", "online", *args, "--student", lm.student, "--data", lm.data,
                "--out", tmp_path / "split", "--epochs", 2, "--hard-weight", 1,
                "--topk", 16) == 2
    assert "holds another run" in capsys.readouterr().err
    resumed = _student(lm, tmp_path / "split", "online", *args, "--resume", epochs=2)
    assert resumed["history"] == [dict(h, seconds=r["seconds"]) for h, r in
                                  zip(straight["history"], resumed["history"])]
    assert resumed["held_out_loss"] == straight["held_out_loss"]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    assert _run("--mode", "online", *args, "--student", lm.student, "--data", lm.data,
                "--out", tmp_path / "split", "--epochs", 2, "--hard-weight", 1,
                "--topk", 16, "--temperature", 2, "--resume") == 2
    assert "other settings" in capsys.readouterr().err
    again = _student(lm, tmp_path / "split", "online", *args, "--overwrite", epochs=2)
    assert again["held_out_loss"] == straight["held_out_loss"]


def test_a_teacher_with_another_tokenizer_or_a_missing_store_is_refused(lm, tmp_path, capsys):
    other = bpe_tokenizer(stdlib_text(("string",)), vocab=384)
    model = tiny("llama", len(other), seed=0)
    model.save_pretrained(tmp_path / "other")
    other.save_pretrained(tmp_path / "other")
    for extra, message in (
            (("--mode", "online", "--teacher", tmp_path / "other"), "differ first at token id"),
            (("--mode", "offline", "--store", tmp_path / "none"), "no teacher store"),
            (("--mode", "online"), "--mode online needs --teacher"),
            (("--mode", "offline", "--divergence", "jsd"), "needs --mode online")):
        assert _run("--student", lm.student, "--data", lm.data, "--out", tmp_path / "out",
                    "--overwrite", *extra) == 2
        assert message in capsys.readouterr().err
