"""The `ptcore` command.

Each subcommand is a module in ptcore/commands/ with ``add_parser(subparsers)``, which
registers its arguments and sets ``func`` (called with the parsed args, returns an exit
code). Those modules import heavy code (torchvision, training) inside ``func`` only, so
`ptcore --help` stays fast. To add a subcommand, add its module name to COMMANDS."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["info", "models", "finetune", "distill", "incremental", "run", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptcore", description="Adapt pretrained PyTorch models: fine-tuning, incremental "
        "training, knowledge distillation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"ptcore.commands.{name}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
