"""`ptcore run CONFIG [CONFIG ...]`: run stage configs (YAML or TOML) and write a report
(ptcore/runner/)."""


def add_parser(sub):
    p = sub.add_parser("run", help="run stage config files (YAML/TOML) and write a report",
                       description="Validate every config (and prepare data and models) "
                       "before training anything, run the stages in order, then write "
                       "results.json, report.md and plots to --out (default: the last "
                       "config's out). See docs/config.md.")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="stage config files, run in order")
    p.add_argument("--out", help="where results.json and report.md go")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (on a stderr that is not a terminal, progress "
                   "otherwise comes as a plain line every few seconds)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ptcore.config import load_config
    from ptcore.runner import run_stages

    # Errors: ptcore/cli.py prints those a user can fix on one line (exit 2).
    cfgs = [load_config(path) for path in args.configs]
    run_stages(cfgs, args.out or cfgs[-1]["out"], sources=args.configs,
               command="ptcore run " + " ".join(args.configs),
               progress=not args.no_progress)
    return 0
