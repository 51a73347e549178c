"""`ptcore distill`: train a student on a frozen teacher's soft labels, from few labels
and an unlabelled pool (ptcore.strategies.Distill)."""
from ptcore.commands._engine_args import add_engine_arguments, start_run, strategy_kwargs
from ptcore.commands._run_folder import open_run_folder
from ptcore.commands.options import add_options

CACHE_DTYPES = ("float16", "bfloat16", "float32", "int8")


def add_parser(sub):
    from ptcore.config import add_config_argument
    from ptcore.strategies.distill.terms import names

    p = sub.add_parser(
        "distill", help="knowledge distillation: a student learns from a frozen teacher",
        description="Split the data into train/val/test, keep --shots labels of the "
        "training split (the rest is unlabelled: the teacher's soft pseudo-labels only), "
        "distil --teacher into --student, and report the student's test accuracy. Writes "
        "last.pt, metrics.jsonl, model.pt (the student) and summary.json to --out.")
    add_options(p, "distill", "teacher")
    p.add_argument("--teacher-weights",
                   help="torchvision weights name or local state_dict / ptcore checkpoint; "
                   "its head must score the data's classes (required)")
    add_options(p, "distill", "student")
    p.add_argument("--student-weights", help="initial student weights (default: random init)")
    add_options(p, "distill", "data", "root", "image_size", "preprocess", "download",
                "classes")
    p.add_argument("--teacher-image-size", type=int,
                   help="the teacher's input size (inputs are resized for it)")
    add_options(p, "distill", "augment", "shots", "val", "test")
    add_options(p, "distill", "mode", "topk", "temperature", "soft_weight", "hard_weight")
    p.add_argument("--threshold", type=float,
                   help="use unlabelled samples where the teacher's confidence at "
                   "--temperature is at least this")
    add_options(p, "distill", "method", "divergence", "beta")
    p.add_argument("--features", dest="feature_pairs", help="layer pairs for the feature "
                   f"terms ({', '.join(names('features'))}): "
                   "student.path:teacher.path[,student.path:teacher.path...]")
    p.add_argument("--cache-dtype", choices=CACHE_DTYPES, default="float16",
                   help="storage of the offline cache's full logits")
    p.add_argument("--cache-dir", help="offline cache directory (default: OUT/teacher_cache)")
    add_engine_arguments(p, "distill")
    add_config_argument(p, "distill")
    p.set_defaults(func=run)


def run(args) -> int:
    from ptcore.runtime.distributed import is_main

    start_run(args, "distill", required=("teacher", "teacher_weights", "student", "out"),
              aliases={"model.name": "student", "model.weights": "student_weights",
                       "strategy.teacher_input_size": "teacher_image_size"})
    summary = _distill(args)
    if not is_main():
        return 0
    test = summary["test"]
    print(f"student {args.student}: test accuracy {100 * test['accuracy']:.2f}% on "
          f"{test['count']} samples ({summary['labelled']} labelled, {summary['unlabelled']} "
          f"unlabelled training samples; the teacher ran on {summary['teacher_samples']}); "
          f"results in {args.out}")
    return 0


def _distill(args) -> dict:
    import torch

    from ptcore.config.recipe import load_data
    from ptcore.data import IN_MEMORY
    from ptcore.models import create_model, get_head, head_width
    from ptcore.strategies import Distill

    if args.augment not in (None, "none") and args.mode == "offline":  # before any model or data loads
        raise ValueError(f"--augment {args.augment} with --mode offline: the offline cache "
                         "holds the teacher's outputs for unaugmented images, not for the "
                         "freshly augmented ones the student sees; use --mode online")
    # Image files reach the student (and, resized, the teacher) as finetune would read them
    # for the student: through its weights' preprocessing, augmented at the same.
    d = load_data(args.data_options, stage="distill", seed=args.seed, model=args.student,
                  weights=args.student_weights)
    classes = d["classes"]
    progress = not args.no_progress
    teacher = create_model(args.teacher, weights=args.teacher_weights, progress=progress)
    if head_width(get_head(teacher)) != classes:  # before the teacher runs over the data
        raise ValueError(f"--teacher-weights give {args.teacher} a head of "
                         f"{head_width(get_head(teacher))} classes; the data has {classes}")
    student = create_model(args.student, num_classes=classes, weights=args.student_weights,
                           progress=progress)
    strategy = Distill(teacher, student, **strategy_kwargs(
        args, temperature=args.temperature, soft_weight=args.soft_weight,
        hard_weight=args.hard_weight, mode=args.mode, topk=args.topk, threshold=args.threshold,
        teacher_input_size=args.teacher_image_size, cache_dtype=getattr(torch, args.cache_dtype),
        cache_dir=args.cache_dir, method=args.method, divergence=args.divergence, beta=args.beta,
        **({"features": args.feature_pairs.split(",")} if args.feature_pairs else {})))
    meta = {"command": "distill", "model": args.student, "num_classes": classes,
            "teacher": args.teacher, "image_size": d["image_size"]}
    run = open_run_folder(args, "distill")  # last: a bad option leaves --out untouched
    summary = strategy.fit(d["train"], d["unlabelled"], d["val"], out_dir=run,
                           resume=run.resume, meta=meta)
    summary["test"] = strategy.evaluate(d["test"])
    if args.data not in IN_MEMORY:  # images read from files: what model.pt expects
        summary["preprocessing"] = d["preprocessing"].as_dict()
    run.write_summary(summary)
    return summary
