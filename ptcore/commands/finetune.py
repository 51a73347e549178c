"""`ptcore finetune`: fine-tune a registered model on digits, an image folder or a
torchvision dataset; writes checkpoints, metrics.jsonl, model.pt and summary.json."""
from ptcore.commands._engine_args import add_engine_arguments, start_run, strategy_kwargs
from ptcore.commands._run_folder import open_run_folder
from ptcore.commands.options import add_options, add_renamed

_DATA = ("model", "weights", "data", "root", "image_size", "preprocess", "download", "augment",
         "classes", "shots", "val", "test", "freeze")


def add_parser(sub):
    from ptcore.config import add_config_argument

    p = sub.add_parser("finetune", help="fine-tune a pretrained model (linear probe, partial "
                       "or full)")
    add_options(p, "finetune", *_DATA)
    add_renamed(p, "finetune", p.add_argument(
        "--tune", dest="mode", choices=("linear", "partial", "full"),
        help="what trains: linear (the head alone), partial (everything after --freeze) or "
        "full; default: partial when --freeze is given, else full"))
    p.add_argument("--layer-decay", type=float, default=0.5)
    p.add_argument("--unfreeze-every", type=int)
    p.add_argument("--bn", choices=("train", "eval", "frozen"), default="train")
    p.add_argument("--no-cache", action="store_true", help="do not cache frozen features")
    add_engine_arguments(p, "finetune", label_smoothing=True)
    add_config_argument(p, "finetune")
    p.set_defaults(func=run)


def run(args) -> int:
    from ptcore.runtime.distributed import is_main

    start_run(args, "finetune", required=("model", "out"))
    summary = _finetune(args)
    test = summary["test"]
    if test and is_main():
        print(f"{args.model}: test accuracy {100 * test['accuracy']:.2f}% on {test['count']} "
              f"samples; results in {args.out}")
    return 0


def _finetune(args) -> dict:
    from ptcore.config.recipe import load_data
    from ptcore.data import IN_MEMORY
    from ptcore.models import create_model
    from ptcore.strategies import FineTune

    d = load_data(args.data_options, stage="finetune", seed=args.seed, model=args.model,
                  weights=args.weights)
    model = create_model(args.model, num_classes=d["classes"], weights=args.weights,
                         progress=not args.no_progress)
    mode = args.mode or ("partial" if args.freeze else "full")
    ft = FineTune(model, **strategy_kwargs(
        args, mode=mode, freeze=args.freeze, layer_decay=args.layer_decay,
        unfreeze_every=args.unfreeze_every, bn=args.bn, cache=not args.no_cache))
    meta = {"model": args.model, "num_classes": d["classes"], "data": args.data}
    run = open_run_folder(args, "finetune")  # last: a bad option leaves --out untouched
    summary = ft.fit(d["train"], d["val"], out_dir=run, resume=run.resume, meta=meta)
    summary["test"] = ft.evaluate(d["test"]) if len(d["test"]) else {}
    summary["args"] = {k: v for k, v in vars(args).items()
                       if k not in ("func", "argv", "data_options")}
    if args.data not in IN_MEMORY:  # images read from files: what model.pt expects
        summary["preprocessing"] = d["preprocessing"].as_dict()
    run.write_summary(summary)
    return summary
