"""The `ptcore` command's errors: a user's mistake (a bad config value or option, a folder
that holds another run, a full disk, a foreign file) is one line naming the key, option or
file, exit 2, and nothing trains; a bug keeps its traceback. Configs and argv are fuzzed."""
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptcore.commands.finetune as finetune_cmd
from ptcore.cache.persist import CacheFileError
from ptcore.cli import main
from ptcore.engine import fit, save_checkpoint
from ptcore.runtime.distributed import available_devices, resolve_device
from ptcore.models.weights import WeightsUnavailableError


def _exit(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


NUMBERS = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True))
NOT_NUMBERS = st.one_of(st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                        st.none())
# config key -> values that must be refused (whatever else a strategy would check later)
BAD_CONFIG = {
    ("engine", "epochs"): st.one_of(st.integers(-100, 0), st.floats(), NOT_NUMBERS),
    ("engine", "batch_size"): st.one_of(st.integers(-100, 0), st.floats(), NOT_NUMBERS),
    ("engine", "lr"): st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan),
                                st.text(max_size=3), st.booleans()),
    ("engine", "grad_clip"): st.one_of(st.floats(max_value=0.0), st.just(math.inf),
                                       st.just(math.nan), st.booleans(), st.text(max_size=3)),
    ("engine", "warmup"): st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-9),
                                    st.just(math.nan), st.booleans()),
    ("data", "val"): st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-9),
                               st.just(math.nan), NOT_NUMBERS.filter(lambda v: v is not None)),
    ("data", "image_size"): st.one_of(st.integers(-100, 7), st.floats(),
                                      NOT_NUMBERS.filter(lambda v: v is not None)),
    ("data", "classes"): st.one_of(
        st.lists(st.one_of(st.integers(max_value=-1), st.booleans(), st.text(max_size=2)),
                 min_size=1, max_size=3), st.integers(), st.text(max_size=3)),
    ("data", "shots"): st.one_of(st.integers(-100, 0), st.floats(), st.booleans()),
    ("engine", "log"): st.one_of(st.just(["wandb"]), st.just("csv,nope"), st.integers(),
                                 st.booleans(), st.lists(st.integers(), min_size=1, max_size=2)),
    ("engine", "keep_best"): st.one_of(st.integers(-100, -1), st.floats(), NOT_NUMBERS),
    ("engine", "save_every"): st.one_of(st.integers(-100, -1), st.floats(), NOT_NUMBERS),
    ("engine", "patience"): st.one_of(st.integers(-100, 0), st.floats(), st.booleans()),
    ("engine", "best_mode"): st.text(max_size=4).filter(lambda v: v not in ("min", "max")),
    (None, "seed"): st.one_of(st.integers(max_value=-1), st.floats(), st.booleans(),
                              st.text(max_size=3)),
}


# capsys is read (and so emptied) at the end of every example.
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(key=st.sampled_from(sorted(BAD_CONFIG, key=str)), data=st.data())
def test_fuzzed_config_values_exit_2_naming_the_key(key, data, capsys):
    section, name = key
    value = data.draw(BAD_CONFIG[key])
    doc = {"stage": "finetune", "out": "unused"}
    doc.update({name: value} if section is None else {section: {name: value}})
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text(yaml.safe_dump(doc))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(finetune_cmd, "_finetune", lambda args: pytest.fail("trained"))
            code = _exit(["finetune", "--config", str(path), "--model", "resnet18"])
    err = capsys.readouterr().err
    assert code == 2, (doc, err)
    assert name in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


BAD_ARGV = {
    "--epochs": ["0", "-3", "1.5", "x", ""], "--batch-size": ["0", "-1", "nan"],
    "--lr": ["0", "-1e-3", "inf", "nan", "-inf", "x"], "--weight-decay": ["-1", "nan"],
    "--image-size": ["0", "7", "-8", "a"], "--val": ["1", "1.5", "-0.1", "nan"],
    "--test": ["2", "inf"], "--classes": ["a", "-1", "1,,x", ","], "--shots": ["0", "-2"],
    "--seed": ["-1", "x", "0.5"], "--precise-bn": ["-1", "y"], "--resume": ["maybe", "yes"],
    "--ddp-timeout": ["0", "-5", "nan", "inf", "x"], "--layer-decay": ["0", "2", "nan"],
    "--unfreeze-every": ["0", "-1"], "--log": ["wandb", "csv,x", ""],
    "--log-every": ["0", "x"], "--keep-best": ["-1", "x"], "--keep-last": ["-2"],
    "--save-every": ["-1", "x"],
    "--patience": ["0", "-2"], "--best-mode": ["up"], "--best-metric": ["accuracy"],
}


@FUZZ
@given(option=st.sampled_from(sorted(BAD_ARGV)), data=st.data(),
       others=st.lists(st.sampled_from([["--no-progress"], ["--epochs", "2"], ["--lr", "0.1"],
                                        ["--classes", "0,1"]]), max_size=2))
def test_fuzzed_argv_values_exit_2_naming_the_option(option, data, others, capsys):
    value = data.draw(st.sampled_from(BAD_ARGV[option]))
    argv = ["finetune", "--model", "resnet18", "--out", "unused",
            *[a for o in others for a in o], f"{option}={value}"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(finetune_cmd, "_finetune", lambda args: pytest.fail("trained"))
        code = _exit(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert option in err and "Traceback" not in err


@pytest.mark.parametrize("tasks", ["0", "-1", "a", "1,-2", "0,1;x"])
def test_incremental_tasks_are_checked(tasks, capsys):
    assert _exit(["incremental", "--tasks", tasks, "--out", "unused"]) == 2
    assert "--tasks" in capsys.readouterr().err


@pytest.mark.parametrize("tasks", [[[0, True]], [[0, -1]], [], [[]], 0, -2])
def test_config_task_lists_refuse_booleans_negatives_and_empties(tmp_path, tasks, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"stage": "incremental", "out": "x", "data": {"tasks": tasks}}))
    assert _exit(["incremental", "--config", str(path)]) == 2
    assert "data.tasks" in capsys.readouterr().err


@pytest.mark.parametrize("clip", [0, -1.0, math.inf, math.nan, True])
def test_fit_refuses_a_bad_grad_clip(clip):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="grad_clip"):
        fit(model, [(torch.zeros(2), 0)], torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=1, batch_size=1, grad_clip=clip, progress=False)


def test_an_option_given_with_its_default_value_beats_the_config(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(finetune_cmd, "_finetune", lambda args: seen.update(vars(args)) or
                        {"test": {}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"stage": "finetune", "out": str(tmp_path / "o"),
                                    "engine": {"epochs": 3, "batch_size": 8}}))
    assert main(["finetune", "--config", str(path), "--model", "resnet18", "--epochs", "10"]) == 0
    assert seen["epochs"] == 10 and seen["batch_size"] == 8  # 10 is the parser's default


def _raise(e):
    def f(args):
        raise e
    return f


@pytest.mark.parametrize("error, text", [
    (PermissionError(13, "Permission denied", "/root/x"), "Permission denied: '/root/x'"),
    (NotADirectoryError(20, "Not a directory", "/a/b"), "Not a directory"),
    (OSError(28, "No space left on device", "/o/last.pt"), "No space left on device"),
    (CacheFileError("features.bin does not match its SHA-256"), "features.bin"),
    (WeightsUnavailableError("could not get torchvision weights"), "torchvision weights"),
])
def test_user_errors_are_one_line_exit_2(monkeypatch, capsys, error, text):
    monkeypatch.setattr(finetune_cmd, "_finetune", _raise(error))
    assert main(["finetune", "--model", "resnet18", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert text in err and len(err.strip().splitlines()) == 1


def test_bugs_keep_their_traceback(monkeypatch):
    monkeypatch.setattr(finetune_cmd, "_finetune", lambda args: json.loads("not json"))
    with pytest.raises(ValueError):  # raised inside a library, not by a ptcore check
        main(["finetune", "--model", "resnet18", "--out", "o"])
    monkeypatch.setattr(finetune_cmd, "_finetune", lambda args: {}["missing"])
    with pytest.raises(KeyError):
        main(["finetune", "--model", "resnet18", "--out", "o"])


class _FakeFineTune:
    calls = []

    def __init__(self, model, **kw):
        pass

    def fit(self, train, val=None, *, out_dir, resume, meta):
        self.calls.append((resume, sorted(p.name for p in Path(out_dir).iterdir())))
        return {"history": []}

    def evaluate(self, data):
        return {"accuracy": 1.0, "count": len(data)}


ARGS = ["finetune", "--model", "resnet18", "--image-size", "16", "--classes", "0,1",
        "--no-progress"]


def test_the_run_folder_belongs_to_one_run(tmp_path, monkeypatch, capsys):
    import ptcore.strategies

    monkeypatch.setattr(ptcore.strategies, "FineTune", _FakeFineTune)
    out = tmp_path / "run"
    calls = _FakeFineTune.calls
    calls.clear()
    assert main([*ARGS, "--out", str(out), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main([*ARGS, "--out", str(out), "--resume", "auto"]) == 0
    assert calls[-1] == ("auto", ["run.json"])
    save_checkpoint(out / "last.pt", {}, epoch=1)  # the run has trained an epoch
    assert main([*ARGS, "--out", str(out)]) == 2
    assert "holds another run (last.pt)" in capsys.readouterr().err
    assert main([*ARGS, "--out", str(out), "--resume", "--lr", "0.01"]) == 2
    assert "lr: 0.001 -> 0.01" in capsys.readouterr().err
    assert main([*ARGS, "--out", str(out), "--resume", "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main([*ARGS, "--out", str(out), "--resume", "--epochs", "20"]) == 0
    assert calls[-1][0] == "auto"
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # a worker torchrun restarted
    assert main([*ARGS, "--out", str(out), "--overwrite"]) == 0
    assert calls[-1] == ("auto", ["last.pt", "run.json", "summary.json"])
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT")
    assert main([*ARGS, "--out", str(out), "--overwrite", "--lr", "0.01"]) == 0
    assert calls[-1] == (False, ["run.json", "summary.json"])
    assert json.loads((out / "run.json").read_text())["settings"]["lr"] == 0.01


# Devices this machine lacks: one line naming those it has, before any data or model loads.
_MISSING_DEVICES = [d for d in ("cuda", "cuda:3", "mps", "xpu", "bogus", "meta")
                    if d not in available_devices()
                    and not (d == "cuda" and torch.cuda.is_available())]


@pytest.mark.parametrize("device", _MISSING_DEVICES)
@pytest.mark.parametrize("command", ["finetune", "incremental", "distill"])
def test_a_device_this_machine_lacks_is_one_line_exit_2(command, device, monkeypatch, capsys):
    import ptcore.models

    monkeypatch.setattr(ptcore.models, "create_model", lambda *a, **k: pytest.fail("loaded"))
    argv = {"finetune": ["--model", "resnet18"], "incremental": [],
            "distill": ["--teacher", "resnet18", "--teacher-weights", "t.pt", "--student",
                        "resnet18"]}[command]
    assert _exit([command, *argv, "--out", "unused", "--device", device]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--device must be a device this machine has (cpu" in err and repr(device) in err


def test_a_missing_device_in_a_config_names_the_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"stage": "finetune", "out": str(tmp_path / "o"),
                                    "model": {"name": "resnet18"},
                                    "engine": {"device": "bogus:0"},
                                    "methods": {"a": {"mode": "full"}}}))
    assert _exit(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "engine.device must be a device this machine has" in err
    assert len(err.strip().splitlines()) == 1


def test_the_engine_refuses_a_missing_device_by_name():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="not a device name.*available here: cpu"):
        resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:1' is not available on this machine"):
            resolve_device("cuda:1")


def test_models_filter_that_matches_nothing_says_so(capsys):
    assert _exit(["models", "--filter", "zzz"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no torchvision model name matches 'zzz'" in captured.err
    assert "--timm" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert _exit(["models", "--filter", "resnet5*"]) == 0
    assert capsys.readouterr().out.split() == ["resnet50"]


@pytest.mark.parametrize("argv, text", [
    (["--preprocess", "crop_size=abc"], "--preprocess: crop_size takes an int, got 'abc'"),
    (["--preprocess", "mean=a/b/c"], "--preprocess: mean takes numbers a/b/c, got 'a/b/c'"),
    (["--preprocess", "crop_size"], "--preprocess: takes KEY=VALUE pairs, got 'crop_size'"),
    (["--tune", "partial"], "mode='partial' needs freeze"),
    (["--tune", "linear", "--freeze", "layer2"], "freeze is for mode='partial' only"),
])
def test_finetune_option_values_name_what_is_wrong(argv, text, capsys):
    code = _exit(["finetune", "--model", "resnet18", "--data", "digits", "--image-size", "8",
                  "--out", "unused", *argv])
    err = capsys.readouterr().err
    assert code == 2 and text in err and "Traceback" not in err, err


def test_distill_checks_beta_and_the_cache_dir_before_loading(tmp_path, monkeypatch, capsys):
    import ptcore.models

    monkeypatch.setattr(ptcore.models, "create_model", lambda *a, **k: pytest.fail("loaded"))
    base = ["distill", "--teacher", "resnet18", "--teacher-weights", "t.pt", "--student",
            "resnet18", "--out", str(tmp_path / "o")]
    assert _exit([*base, "--divergence", "jsd", "--beta", "1.5"]) == 2
    assert "--beta must be in (0, 1), got 1.5" in capsys.readouterr().err
    monkeypatch.undo()
    afile = tmp_path / "afile"
    afile.write_text("")
    from ptcore.strategies import Distill

    with pytest.raises(ValueError, match="cache_dir .* is a file, not a folder"):
        Distill(_tiny(), _tiny(), cache_dir=afile)


def test_demo_refuses_an_out_that_is_a_file(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert _exit(["demo", "--out", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def _tiny():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
