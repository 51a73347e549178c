"""`ptcore demo`: pretrain, fine-tune, incremental and distillation on the embedded digits,
with no network, and a report of what each strategy is for (docs/demo.md)."""


def add_parser(sub):
    p = sub.add_parser("demo", help="all of ptcore on real data in a couple of minutes",
                       description="From a backbone ptcore pretrained on rendered glyphs of "
                       "many scripts: fine-tune it to digits 5-9 with few labels, train it on "
                       "0-4, learn 5-9 incrementally, distil it into a small student; "
                       "write results.json, report.md, plots and each stage's config to --out.")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--preset", choices=("quick", "seed"), default="quick",
                   help="quick: small models, ~2 min on 2 CPU cores; seed: the seed "
                   "document's ResNet-50 / AlexNet / VGG-19 at reduced size (much longer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every epoch count (e.g. 0.3 for a smoke test)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (on a stderr that is not a terminal, progress "
                   "otherwise comes as a plain line every few seconds)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ptcore.demo.demo import run_demo

    run_demo(args.out, preset=args.preset, seed=args.seed, scale=args.scale,
             progress=not args.no_progress)  # errors: cli.py
    return 0
