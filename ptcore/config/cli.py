"""`--config FILE` for the strategy subcommands (`ptcore finetune|incremental|distill`).

A subcommand calls :func:`add_config_argument` in its ``add_parser`` and
:func:`merge_config` first thing in its ``run``. Every key the file gives becomes the value
of the matching command-line option unless that option was given on the command line
(`ptcore`'s main passes the subcommand's argv as ``args.argv``, so an option given with
its default value still wins; without it, options at their default count as not given).
Every option's value is then checked as a config's would be (numbers finite, ranges), and
an error names the option. ``engine`` and ``strategy``
keys that have no option of their own are kept in ``args.config_options`` for the command
to pass to its strategy; any other key without an option is an error. See docs/config.md
for how keys find their options.
"""
from __future__ import annotations

import argparse

from ptcore.config.load import read_document
from ptcore.config.schema import (DATA_KEYS, ConfigError, check_value, data_section,
                                  validate_config)

__all__ = ["add_config_argument", "merge_config", "data_options"]

_PARSERS: dict[str, argparse.ArgumentParser] = {}  # stage -> its subcommand's parser


def add_config_argument(parser: argparse.ArgumentParser, stage: str) -> None:
    """Add ``--config FILE`` to the subcommand ``parser`` of ``stage``. Options that a
    config may supply should not be ``required=True`` (use ``merge_config(required=)``)."""
    parser.add_argument("--config", metavar="FILE",
                        help="YAML or TOML stage config (docs/config.md); options given "
                        "here override it")
    _PARSERS[stage] = parser


def _leaves(doc: dict):
    """(section, key, value) of every setting the document gives."""
    for section in ("model", "teacher", "data", "engine", "strategy"):
        for key, value in (doc.get(section) or {}).items():
            yield section, key, value
    for key in ("seed", "out"):
        if key in doc:
            yield None, key, doc[key]


def _dest(section, key, dests, aliases) -> tuple[str, bool] | None:
    """(destination, negate) of a config key among the parser's option destinations."""
    path = f"{section}.{key}" if section else key
    candidates = [aliases.get(path), f"{section}_{key}" if section else None, key]
    if key in ("name", "dataset"):
        candidates.append(section)
    for c in candidates:
        if c in dests:
            return c, False
    if f"no_{key}" in dests:  # a `--no-cache` flag holds the negation of `cache`
        return f"no_{key}", True
    return None


def _convert(value, action: argparse.Action):
    if isinstance(value, list) and action.type in (None, str) and action.nargs is None:
        return ",".join(str(v) for v in value)  # e.g. --classes 5,6,7
    return value


def _given(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the options present in ``argv`` (argparse fills in defaults, so
    the parsed namespace cannot tell "given, equal to the default" from "not given")."""
    saved = [(a, a.default) for a in parser._actions]
    try:
        for a, _ in saved:
            a.default = argparse.SUPPRESS
        ns, _ = parser.parse_known_args(argv, argparse.Namespace())
    finally:
        for a, default in saved:
            a.default = default
    return set(vars(ns))


def _check_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if action.help is argparse.SUPPRESS:  # an old spelling of an option checked here
            continue
        if action.dest in vars(args) and action.option_strings:
            check_value(action.dest, getattr(args, action.dest), action.option_strings[0])


def merge_config(args: argparse.Namespace, stage: str, *, aliases: dict[str, str] | None = None,
                 required: tuple[str, ...] = ()) -> argparse.Namespace:
    """Fill ``args`` from ``args.config`` (if given) and check that every option named in
    ``required`` has a value. ``aliases`` map config keys to option destinations where the
    names differ, e.g. ``{"model.name": "student"}``.
    Raises ConfigError (a ValueError) naming the key on any problem."""
    aliases = aliases or {}
    args.config_options = {}
    path = getattr(args, "config", None)
    if path:
        doc = read_document(path)
        if doc.get("stage", stage) != stage:
            raise ConfigError(f"{path}: a {doc['stage']!r} config given to `ptcore {stage}`; "
                              f"run it with `ptcore run {path}`")
        if "methods" in doc:
            raise ConfigError(f"{path}: `methods` compares several runs; run it with "
                              f"`ptcore run {path}`")
        validate_config({"stage": stage, **doc}, source=str(path), partial=True)
        parser = _PARSERS[stage]
        actions = {a.dest: a for a in parser._actions}
        argv = getattr(args, "argv", None)
        given = _given(parser, argv) if argv is not None else None
        for section, key, value in _leaves(doc):
            found = _dest(section, key, actions, aliases)
            if found is None and section in ("engine", "strategy"):
                args.config_options[key] = value  # a strategy argument without an option
                continue
            if found is None and key == "kwargs" and not value:
                continue  # the default: no constructor arguments
            if found is None:
                where = f"{section}.{key}" if section else key
                raise ConfigError(f"{path}: {where} has no option in `ptcore {stage}`; use "
                                  f"`ptcore run` for this config")
            dest, negate = found
            if dest not in given if given is not None else \
                    getattr(args, dest) == parser.get_default(dest):
                setattr(args, dest, (not value) if negate else _convert(value, actions[dest]))
    if stage in _PARSERS:
        _check_options(args, _PARSERS[stage])
    missing = [r for r in required if getattr(args, r, None) in (None, "")]
    if missing:
        raise ConfigError(f"`ptcore {stage}` needs {', '.join('--' + m.replace('_', '-') for m in missing)} "
                          "(on the command line or in --config)")
    return args


def data_options(args: argparse.Namespace, stage: str, *, aliases: dict[str, str] | None = None,
                 fixed: dict | None = None) -> dict:
    """The complete `data` section that ``args`` (merged with any --config) describe: each
    data key read from the option it maps to, as a config key finds its option (``aliases``
    as for :func:`merge_config`); ``fixed``: keys a subcommand has no option for and sets
    itself (incremental's ``val``: 0); the rest at the config's defaults. The one data recipe
    (:func:`ptcore.config.recipe.load_data`) reads it, as it reads a config's."""
    dests = vars(args)
    raw = dict(fixed or {})
    for key in DATA_KEYS:
        found = _dest("data", key, dests, aliases or {})
        if found is not None and key not in raw:
            raw[key] = getattr(args, found[0])
    return data_section(raw, stage)
