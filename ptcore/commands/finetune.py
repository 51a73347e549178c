"""`ptcore finetune`: fine-tune a registered model on digits, an image folder or a
torchvision dataset; writes checkpoints, metrics.jsonl, model.pt and summary.json."""


def add_parser(sub):
    p = sub.add_parser("finetune", help="fine-tune a pretrained model (linear probe, partial "
                       "or full)")
    p.add_argument("--model", required=True, help="registered model name, e.g. resnet50")
    p.add_argument("--weights", help="torchvision weights name (DEFAULT, IMAGENET1K_V2, ...) "
                   "or a local state_dict / ptcore checkpoint file")
    p.add_argument("--data", required=True, help="'digits', an ImageFolder directory, or a "
                   "torchvision dataset name with --data-root")
    p.add_argument("--data-root", help="root of a torchvision dataset given by name")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", help="comma-separated class ids to keep (relabelled 0..k-1)")
    p.add_argument("--shots", type=int, help="labelled samples per class for training")
    p.add_argument("--val", type=float, default=0.15, help="validation fraction")
    p.add_argument("--test", type=float, default=0.15, help="test fraction")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--freeze", help="split point frozen through (partial fine-tuning), "
                      "e.g. layer3")
    mode.add_argument("--mode", choices=("linear", "full"), help="linear probe or full")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--layer-decay", type=float, default=0.5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--unfreeze-every", type=int)
    p.add_argument("--bn", choices=("train", "eval", "frozen"), default="train")
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--amp", default="auto")
    p.add_argument("--no-cache", action="store_true", help="do not cache frozen features")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from ptcore import data as D
    from ptcore.engine import atomic_write_json
    from ptcore.models import create_model
    from ptcore.strategies import FineTune

    dataset = D.dataset_from_spec(args.data, image_size=args.image_size, root=args.data_root)
    if args.classes:
        dataset = D.class_subset(dataset, [int(c) for c in args.classes.split(",")])
    train, val, test = D.train_val_test_split(dataset, args.val, args.test, seed=args.seed)
    if args.shots:
        train, _ = D.k_shot(train, args.shots, seed=args.seed)
    num_classes = len(D.targets_of(dataset).unique())
    model = create_model(args.model, num_classes=num_classes, weights=args.weights)
    ft = FineTune(model, mode="partial" if args.freeze else (args.mode or "full"),
                  freeze=args.freeze, lr=args.lr, layer_decay=args.layer_decay,
                  weight_decay=args.weight_decay, unfreeze_every=args.unfreeze_every,
                  bn=args.bn, cache=not args.no_cache, epochs=args.epochs,
                  batch_size=args.batch_size, schedule=args.schedule, amp=args.amp,
                  seed=args.seed, progress=not args.quiet)
    meta = {"model": args.model, "num_classes": num_classes, "data": args.data}
    summary = ft.fit(train, val if len(val) else None, out_dir=args.out, resume=args.resume,
                     meta=meta)
    summary["test"] = ft.evaluate(test) if len(test) else {}
    summary["args"] = {k: v for k, v in vars(args).items() if k != "func"}
    atomic_write_json(Path(args.out) / "summary.json", summary)
    print(json.dumps({"final": summary["final"], "test": summary["test"]}, indent=2))
    return 0
