"""`ptcore models`: the models ptcore can build, with their split points."""
import sys


def add_parser(sub):
    p = sub.add_parser("models", help="list the models that can be created (torchvision "
                       "classifiers, timm with --timm) and their split points")
    p.add_argument("--timm", action="store_true", help="list timm models (timm/<name>)")
    p.add_argument("--filter", help="a glob or substring of the names, e.g. 'convnext*'")
    p.add_argument("--splits", action="store_true", help="build each listed model (random "
                   "init, nothing downloaded) and print its split points")
    p.add_argument("--weights", help="with one model: print the preprocessing of these "
                   "weights (DEFAULT, IMAGENET1K_V2, a timm tag)")
    p.set_defaults(func=run)


def _describe(name: str, weights) -> str:
    import torch

    from ptcore.models import create_model, split_points
    from ptcore.models.preprocess import preprocessing

    with torch.device("meta"):  # structure only: no memory, no initialisation
        model = create_model(name)
    lines = [f"{name}: split points {', '.join(split_points(model))}"]
    if weights:
        p = preprocessing(name, weights)
        lines.append(f"  preprocessing ({p.source}): crop {p.crop_size}, resize "
                     f"{p.resize_size}, {p.interpolation}, mean {p.mean}, std {p.std}")
    return "\n".join(lines)


def run(args) -> int:
    from ptcore.models import list_models

    try:
        names = list_models("timm" if args.timm else "torchvision", args.filter)
        if not names and args.filter:
            source = "timm" if args.timm else "torchvision"
            print(f"ptcore models: no {source} model name matches {args.filter!r} (--filter "
                  "is a case-sensitive glob, or else a substring, of the names `ptcore models"
                  f"{' --timm' if args.timm else ''}` lists"
                  + ("" if args.timm else "; timm models are listed with --timm") + ")",
                  file=sys.stderr)
            return 1
        if args.weights and len(names) != 1:
            raise ValueError(f"--weights needs exactly one model; --filter matches {len(names)}")
        for name in names:
            print(_describe(name, args.weights) if args.splits or args.weights else name)
    except (ValueError, TypeError, ImportError) as e:
        print(f"ptcore models: error: {e}", file=sys.stderr)
        return 2
    return 0
