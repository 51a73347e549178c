"""Every option that two strategy subcommands share means the same in both: same spelling,
type, default and help, except where ptcore/commands/options.py declares a per-command
difference. Old spellings still work for one release, with a notice."""
import argparse
import itertools
import json

import pytest

from ptcore.cli import build_parser
from ptcore.commands.options import COMMANDS, OLD_SETTINGS, RENAMED, SHARED
from ptcore.runtime.settings import plain, renamed_settings


def _parsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: sub.choices[name] for name in COMMANDS}


def _options(parser) -> dict[str, argparse.Action]:
    """Visible options by flag (old spellings are hidden: help=SUPPRESS). --config is added
    by the one function ptcore.config.add_config_argument."""
    return {flag: a for a in parser._actions if a.help is not argparse.SUPPRESS
            for flag in a.option_strings if flag not in ("-h", "--help", "--config")}


def _declared(flag: str) -> tuple[str, object] | None:
    return next(((n, o) for n, o in SHARED.items() if flag in o.flags), None)


PAIRS = list(itertools.combinations(COMMANDS, 2))


@pytest.mark.parametrize("a, b", PAIRS)
def test_options_of_one_name_agree_between_subcommands(a, b):
    parsers = _parsers()
    left, right = _options(parsers[a]), _options(parsers[b])
    shared = sorted(set(left) & set(right))
    assert len(shared) >= (20 if "distill-lm" in (a, b) else 30), shared  # the loop at least
    for flag in shared:
        x, y = left[flag], right[flag]
        declared = _declared(flag)
        assert declared is not None, f"{flag} is in {a} and {b} but not in options.SHARED"
        name, option = declared
        overridden = set().union(*(option.overrides.get(c, {}) for c in (a, b)))
        for field in ("dest", "type", "choices", "nargs", "const", "required", "metavar"):
            if getattr(x, field) != getattr(y, field):
                assert field in overridden, f"{flag}: {field} differs between {a} and {b}"
        assert type(x) is type(y), flag
        # A difference in default or help must be declared for one of the two commands.
        if x.default != y.default:
            assert {a, b} & set(option.defaults), f"{flag}: defaults {x.default!r} vs {y.default!r}"
        if x.help != y.help and "help" not in overridden:
            assert {a, b} & set(option.detail), f"{flag}: help differs between {a} and {b}"
            base = option.help() if callable(option.help) else option.help
            assert x.help.startswith(base) and y.help.startswith(base), flag


def test_every_shared_definition_is_used_by_two_subcommands():
    parsers = {name: _options(p) for name, p in _parsers().items()}
    for name, option in SHARED.items():
        users = [c for c, opts in parsers.items() if option.flags[0] in opts]
        assert len(users) >= 2, f"{name} is used by {users} only: it is not shared"


def test_the_one_meaning_of_classes_root_shots_test():
    """The options that used to differ between subcommands now hold the data's values in
    every one of them, and config keys find them under the same names."""
    parsers = _parsers()
    for command in COMMANDS[:3]:  # the image commands
        opts = _options(parsers[command])
        for flag, dest in (("--root", "root"), ("--classes", "classes"), ("--shots", "shots"),
                           ("--test", "test")):
            assert opts[flag].dest == dest, (command, flag)
    assert "--head-classes" in _options(parsers["incremental"])
    assert _options(parsers["finetune"])["--tune"].choices == ("linear", "partial", "full")
    assert _options(parsers["distill"])["--mode"].choices == ("online", "offline")
    assert _options(parsers["distill-lm"])["--mode"].choices == ("online", "offline", "labels")


@pytest.mark.parametrize("old, commands_new", sorted(RENAMED.items()))
def test_old_spellings_still_parse_and_give_a_notice(old, commands_new, capsys):
    from ptcore.commands.options import announce_renamed

    commands, new = commands_new
    value = {"--mode": "linear", "--data-classes": "1,2"}.get(old, "0.3" if old == "--test-fraction"
                                                               else "4")
    for command in commands:
        parser = _parsers()[command]
        old_args = parser.parse_args([old, value])
        new_args = parser.parse_args([new, value])
        dest = _options(parser)[new].dest
        assert getattr(old_args, dest) == getattr(new_args, dest) is not None
        announce_renamed(old_args, command)
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"ptcore {command}: {old} is now {new} (the old spelling goes in the "
                       "next release)"]
        assert "renamed_options" not in vars(old_args)  # not a setting of the run
        announce_renamed(new_args, command)
        assert capsys.readouterr().err == ""


def test_incremental_classes_changed_meaning_is_announced(capsys):
    from ptcore.commands.options import announce_renamed

    args = _parsers()["incremental"].parse_args(["--classes", "0,1"])
    args.argv = ["--classes", "0,1"]
    announce_renamed(args, "incremental")
    assert "--head-classes" in capsys.readouterr().err
    assert args.classes == [0, 1] and args.head_classes is None


def test_an_old_run_folder_resumes_under_the_new_names(tmp_path, monkeypatch):
    """run.json written before the renaming (incremental: classes = the head's, data_classes =
    the data's) is compared under today's names, so --resume accepts the same settings."""
    from ptcore.commands import _run_folder

    old = {"model": "resnet18", "classes": [0, 1], "data_classes": [0, 1, 2],
           "test_fraction": 0.3, "seed": 0}
    new = {"model": "resnet18", "head_classes": [0, 1], "classes": [0, 1, 2], "test": 0.3,
           "seed": 0}
    renames = OLD_SETTINGS["incremental"]
    assert renamed_settings(old, renames) == new
    assert renamed_settings(new, renames) == new  # today's record is left alone
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"command": "incremental", "settings": old}))
    (out / "metrics.jsonl").write_text("")
    args = argparse.Namespace(out=str(out), resume=True, overwrite=False, ddp_timeout=None,
                              **new)
    assert _run_folder.open_run_folder(args, "incremental").resume == "auto"
    args.test, args.resume = 0.2, True
    with pytest.raises(Exception, match="test: 0.3 -> 0.2"):
        _run_folder.open_run_folder(args, "incremental")


def test_incremental_without_model_keeps_resnet18_for_now(tmp_path, monkeypatch, capsys):
    """The default goes in the next release; until then it is used, with a notice."""
    from ptcore.cli import main
    from ptcore.commands import incremental

    seen = {}
    monkeypatch.setattr(incremental, "_incremental", lambda args: seen.setdefault("m", args.model)
                        and 0)
    assert main(["incremental", "--out", str(tmp_path / "o")]) == 0
    assert seen["m"] == "resnet18" and "next release requires --model" in capsys.readouterr().err


def test_incremental_method_options_default_to_incremental_s_signature():
    import inspect

    from ptcore.commands.options import INCREMENTAL
    from ptcore.strategies import Incremental

    signature = inspect.signature(Incremental).parameters
    actions = {a.dest: a for a in _parsers()["incremental"]._actions}
    assert {"agem_batch", "mas_lambda", "mas_samples", "der_weight", "bic_holdout",
            "lwf_weight", "ewc_lambda", "memory", "selection"} <= set(INCREMENTAL)
    for name in INCREMENTAL:
        assert actions[name].default == signature[name].default, name
        assert actions[name].option_strings == ["--" + name.replace("_", "-")]


def test_incremental_method_options_reach_incremental(tmp_path, monkeypatch):
    import functools

    from ptcore.cli import main
    from ptcore.strategies import Incremental

    class Seen(Exception):
        pass

    seen = {}

    @functools.wraps(Incremental.__init__)  # the signature, which the config schema reads
    def capture(self, model, **kw):
        seen.update(kw)
        raise Seen

    monkeypatch.setattr(Incremental, "__init__", capture)
    common = ["incremental", "--model", "mobilenet_v3_small", "--data", "digits",
              "--image-size", "16", "--classes", "0,1,2,3", "--tasks", "2", "--shots", "2",
              "--no-progress", "--out", str(tmp_path / "run")]
    given = {"--mas-lambda": "0.5", "--mas-samples": "all", "--agem-batch": "7",
             "--der-weight": "0.3", "--bic-holdout": "0.2", "--lwf-weight": "2",
             "--ewc-lambda": "100", "--memory": "9", "--selection": "random"}
    with pytest.raises(Seen):
        main(common + [x for kv in given.items() for x in kv])
    assert {k: seen[k] for k in ("mas_lambda", "mas_samples", "agem_batch", "der_weight",
                                 "bic_holdout", "lwf_weight", "ewc_lambda", "memory",
                                 "selection")} == {
        "mas_lambda": 0.5, "mas_samples": None, "agem_batch": 7, "der_weight": 0.3,
        "bic_holdout": 0.2, "lwf_weight": 2.0, "ewc_lambda": 100.0, "memory": 9,
        "selection": "random"}
    # a config's strategy keys fill the options not given on the command line
    cfg = tmp_path / "inc.toml"
    cfg.write_text('stage = "incremental"\n[strategy]\nmas_lambda = 0.03\nagem_batch = 64\n')
    seen.clear()
    with pytest.raises(Seen):
        main(common + ["--config", str(cfg), "--agem-batch", "5"])
    assert (seen["mas_lambda"], seen["agem_batch"], seen["der_weight"]) == (0.03, 5, 0.1)
    with pytest.raises(SystemExit):
        main(common + ["--mas-samples", "0"])


def test_a_run_folder_from_before_an_option_resumes_at_its_default(tmp_path):
    """run.json written before --lwf-weight and --replay-schedule existed: the run was made
    with their defaults, so a resume at the defaults continues it and another value is
    refused, naming the option."""
    from ptcore.commands import _run_folder

    out = tmp_path / "run"
    parse = _parsers()["incremental"].parse_args
    args = parse(["--out", str(out), "--model", "resnet18", "--method", "lwf", "--resume"])
    settings = plain({k: v for k, v in vars(args).items() if k not in _run_folder._FREE})
    old = {k: v for k, v in settings.items() if k not in ("lwf_weight", "replay_schedule")}
    assert len(old) == len(settings) - 2
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"command": "incremental", "settings": old}))
    (out / "metrics.jsonl").write_text("")
    assert _run_folder.open_run_folder(args, "incremental").resume == "auto"
    (out / "run.json").write_text(json.dumps({"command": "incremental", "settings": old}))
    args = parse(["--out", str(out), "--model", "resnet18", "--method", "lwf", "--resume",
                  "--lwf-weight", "2"])
    with pytest.raises(Exception, match=r"lwf_weight: 1\.0 -> 2\.0"):
        _run_folder.open_run_folder(args, "incremental")
