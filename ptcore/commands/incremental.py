"""`ptcore incremental`: learn a sequence of class tasks without forgetting the old ones."""
import argparse
import sys

from ptcore.commands._engine_args import add_engine_arguments, start_run, strategy_kwargs
from ptcore.commands._run_folder import open_run_folder
from ptcore.commands.options import INCREMENTAL, add_options, int_list

_DATA = ("model", "weights", "data", "root", "preprocess", "download", "augment", "image_size",
         "classes", "shots", "test")
DEFAULT_MODEL = "resnet18"  # until the next release: --model is then required, as elsewhere


def _tasks(text: str) -> int | list[list[int]]:
    """``5`` (that many equal tasks) or explicit class lists, ``0,1,2;3,4;5``."""
    text = str(text)
    if ";" in text or "," in text:
        return [int_list(t) for t in text.split(";") if t.strip()]
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a task count >= 1 or class lists such as "
                                          f"0,1;2,3, got {text!r}")
    return count


def add_parser(sub):
    from ptcore.config import add_config_argument

    p = sub.add_parser("incremental", help="learn new classes task by task (LwF, replay, EWC, "
                       "NCM, WA, BiC, DER, iCaRL, SimpleCIL, RanPAC, ER-ACE, A-GEM, MAS, GDumb, "
                       "APER, L2P) and report forgetting")
    add_options(p, "incremental", *_DATA)
    p.add_argument("--head-classes", type=int_list, help="comma-separated classes the "
                   "weights' head already holds, in row order (e.g. 0,1 after fine-tuning on "
                   "the first task)")
    p.add_argument("--benchmark", help="a class-incremental benchmark by name with its "
                   "official splits and class order: split-cifar100, split-imagenet-subset "
                   "(see docs/data.md); --tasks is then a task count")
    p.add_argument("--tasks", type=_tasks, default=5, help="a number of equal tasks, or the "
                   "classes of each task: 0,1,2,3,4;5,6,7;8,9")
    add_options(p, "incremental", "method")
    p.add_argument("--protocol", choices=("class", "task"), default="class")
    add_options(p, "incremental", *INCREMENTAL, group="method options")
    add_options(p, "incremental", "freeze")
    add_engine_arguments(p, "incremental", label_smoothing=True)
    add_config_argument(p, "incremental")
    p.set_defaults(func=run)


def _matrix(R) -> str:
    return "\n".join("  " + " ".join("    -" if v is None else f"{100 * v:5.1f}" for v in row)
                     for row in R)


def run(args) -> int:
    # no --val: incremental training validates nothing, and trains on all of train
    start_run(args, "incremental", required=("out",), data_fixed={"val": 0.0},
              aliases={"strategy.classes": "head_classes"})
    if args.model is None:
        from ptcore.runtime.distributed import is_main

        args.model = DEFAULT_MODEL
        if is_main():
            print(f"ptcore incremental: no --model given, so {DEFAULT_MODEL} (the next release "
                  "requires --model, as finetune does)", file=sys.stderr)
    return _incremental(args)


def _incremental(args) -> int:
    from ptcore.config.recipe import load_data
    from ptcore.runtime import distributed as D
    from ptcore.models import create_model
    from ptcore.strategies import Incremental

    d = load_data(args.data_options, stage="incremental", seed=args.seed, model=args.model,
                  weights=args.weights)
    train_tasks, test_tasks = d["train"], d["test"]
    model = create_model(args.model, weights=args.weights, progress=not args.no_progress)
    strategy = Incremental(model, **strategy_kwargs(
        args, method=args.method, protocol=args.protocol, classes=args.head_classes,
        freeze=args.freeze, **{name: getattr(args, name) for name in INCREMENTAL}))
    run = open_run_folder(args, "incremental")  # last: a bad option leaves --out untouched
    res = strategy.fit(train_tasks, test_tasks, out_dir=run, resume=run.resume)
    if D.is_main():
        for proto in ("class", "task"):
            r = res[f"{proto}_incremental"]
            print(f"{proto}-incremental accuracy matrix (%; row: after task t, column: task k)")
            print(_matrix(r["accuracy_matrix"]))
            print(f"  average incremental accuracy {100 * r['average_incremental_accuracy']:.1f}%"
                  f", final {100 * r['final_accuracy']:.1f}%"
                  + ("" if r["forgetting"] is None else
                     f", forgetting {100 * r['forgetting']:.1f} points"))
        print(f"results, plots and model in {args.out}")
    return 0
