"""The `ptcore` command.

Each subcommand is a module in ptcore/commands/ with ``add_parser(subparsers)``, which
registers its arguments and sets ``func`` (called with the parsed args, returns an exit
code). Those modules import heavy code (torchvision, training) inside ``func`` only, so
`ptcore --help` stays fast. To add a subcommand, add its module name to COMMANDS.

Errors: one a user caused and can fix (ptcore.errors.UserError, an OSError such as a full
disk or a missing file, a ValueError/TypeError raised by ptcore's own argument checks) is
printed on one line naming the key, file or option, exit code 2; a lost rank exits 1 with
one line; anything else is a bug and keeps its traceback. Every exit leaves the process
group."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

COMMANDS = ["info", "models", "finetune", "distill", "distill_lm", "incremental", "run", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptcore", description="Adapt pretrained PyTorch models: fine-tuning, incremental "
        "training, knowledge distillation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"ptcore.commands.{name}").add_parser(sub)
    return parser


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _raised_by_ptcore(e: BaseException) -> bool:
    """Whether ``e`` comes from a deliberate check in ptcore's code (its innermost frame is
    in the package) rather than from a library ptcore called."""
    tb = e.__traceback__
    if tb is None:
        return False
    frame = traceback.extract_tb(tb)[-1]
    return os.path.abspath(frame.filename).startswith(_PACKAGE + os.sep)


def _user_message(e: BaseException) -> str | None:
    from ptcore.errors import UserError

    if isinstance(e, OSError):
        return f"{e.strerror or e}" + (f": {e.filename!r}" if e.filename else "") \
            if e.strerror else str(e)
    if isinstance(e, UserError) or (isinstance(e, (ValueError, TypeError))
                                    and _raised_by_ptcore(e)):
        return str(e)
    return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[argv.index(args.command) + 1:]
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"ptcore {args.command}: interrupted; continue with --resume", file=sys.stderr)
        return 130
    except Exception as e:
        from ptcore.runtime.distributed import RankFailedError

        message = _user_message(e)
        if message is None and not isinstance(e, RankFailedError):
            raise
        print(f"ptcore {args.command}: error: {message or e}", file=sys.stderr)
        return 1 if isinstance(e, RankFailedError) else 2
    finally:
        from ptcore.runtime.distributed import shutdown

        shutdown()


if __name__ == "__main__":
    sys.exit(main())
