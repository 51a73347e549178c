"""A distillation term is one module: this file alone registers a toy term (a penalty on
the student's logits) and runs it through Distill and `ptcore distill`, with the built-in
terms beside it; the registry parses it, checks its option and its combinations, and
lists it in the --method help."""
import json

import pytest
import torch

from ptcore._kd_args import check_float
from ptcore.cli import main
from ptcore.strategies.distill import TERMS, Option, Step, Term, register

from test_distill import digits, make, one_thread, small, student_net, teacher_net  # noqa: F401
from test_distill_cli import _teacher_file


class LogitNorm(Term):
    """The toy: ``logitnorm_weight`` × the mean squared logit of the student."""
    name, kind = "logitnorm", "penalty"
    help = "a toy penalty on the student's logits"
    options = {"logitnorm_weight": Option(0.5, lambda v, n: check_float(v, n, nonneg=True))}
    excludes = ("dkd",)

    def loss(self, step: Step) -> dict:
        norm = step.logits.float().pow(2).mean()
        return {"loss": self.options["logitnorm_weight"] * norm, "logitnorm": norm.detach()}


@pytest.fixture
def toy():
    register(LogitNorm)
    yield LogitNorm
    del TERMS[LogitNorm.name]


def _mean_square_logit(model, data):
    x = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        return model.eval()(x).pow(2).mean().item()


def test_a_toy_term_runs_through_distill(toy, digits):  # noqa: F811
    data = small(digits[2], 30), small(digits[3], 60)
    plain = make(teacher_net(), student_net(), epochs=2)
    plain.fit(*data)
    d = make(teacher_net(), student_net(), method="LogitNorm+kd", logitnorm_weight=2.0,
             epochs=2)
    assert [type(t).__name__ for t in d.terms] == ["KD", "LogitNorm"]  # logit term first
    summary = d.fit(*data)
    assert [list(r)[:4] for r in summary["history"]] == \
        [["epoch", "train_loss", "train_pseudo", "train_logitnorm"]] * 2
    # the penalty acted: the student's logits are smaller than plain KD's
    assert _mean_square_logit(d.student, data[0]) < 0.5 * _mean_square_logit(plain.student,
                                                                            data[0])


@pytest.mark.parametrize("kw,error,match", [
    ({"method": "dkd+logitnorm"}, ValueError, "logitnorm cannot be combined with dkd"),
    ({"method": "logitnorm", "logitnorm_weight": -1.0}, ValueError, "logitnorm_weight"),
    ({"method": "logitnorm", "logit_weight": 1.0}, TypeError, "logit_weight"),
])
def test_a_toy_term_s_bad_combinations_and_options_are_refused(toy, kw, error, match):
    with pytest.raises(error, match=match):
        make(teacher_net(), student_net(), **kw)


def test_a_term_is_registered_once_with_a_name_and_a_kind(toy):
    with pytest.raises(ValueError, match="registered already"):
        register(LogitNorm)
    with pytest.raises(TypeError, match="Term subclass"):
        register(type("Nameless", (Term,), {"kind": "penalty"}))
    with pytest.raises(ValueError, match="'lognorm' is no distillation term"):
        make(teacher_net(), student_net(), method="lognorm")


def test_a_toy_term_runs_through_the_cli(toy, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    assert "logitnorm (a toy penalty on the student's logits)" in \
        " ".join(capsys.readouterr().out.split())
    args = ["distill", "--teacher", "resnet18", "--teacher-weights", _teacher_file(tmp_path, 2),
            "--student", "mobilenet_v3_small", "--data", "digits", "--image-size", "16",
            "--classes", "0,1", "--labels-per-class", "3", "--epochs", "1",
            "--batch-size", "128", "--no-progress", "--method"]
    assert main(args + ["kd+logitnorm", "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "kd+logitnorm" and summary["final"]["train_logitnorm"] > 0
    assert main(args + ["dkd+logitnorm", "--out", str(tmp_path / "bad")]) == 2
    assert "logitnorm cannot be combined with dkd" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_term_s_options_are_config_keys_while_it_is_registered(toy):
    """A config's `strategy` section takes the options of every registered term (built-in
    ones such as dist_beta too), which Distill receives by keyword; unknown keys stay
    errors."""
    from ptcore.config import ConfigError, validate_config

    def config(**strategy):
        return {"stage": "distill", "out": "x", "model": {"name": "resnet18"},
                "teacher": {"name": "resnet18", "weights": "t.pt"},
                "data": {"dataset": "digits"}, "strategy": strategy}

    cfg = validate_config(config(method="kd+logitnorm", logitnorm_weight=2.0, dist_beta=1.5))
    assert cfg["strategy"]["logitnorm_weight"] == 2.0 and cfg["strategy"]["dist_beta"] == 1.5
    with pytest.raises(ConfigError, match="logitnorm_wait"):
        validate_config(config(logitnorm_wait=2.0))
    del TERMS[toy.name]
    try:
        with pytest.raises(ConfigError, match="logitnorm_weight"):
            validate_config(config(logitnorm_weight=2.0))
    finally:
        register(toy)
