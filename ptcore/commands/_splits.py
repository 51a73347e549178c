"""The data options the strategy subcommands share (--preprocess, --download, --augment,
--image-size); what they read is ptcore.config.recipe's one recipe."""
from __future__ import annotations


def _pairs(text: str) -> dict:
    """``crop_size=384,interpolation=bicubic,mean=0.5/0.5/0.5``."""
    import argparse

    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"takes KEY=VALUE pairs, got {item!r}")
        try:
            out[key] = ([float(v) for v in value.split("/")] if key in ("mean", "std")
                        else value if key == "interpolation" else int(value))
        except ValueError:
            expected = "numbers a/b/c" if key in ("mean", "std") else "an int"
            raise argparse.ArgumentTypeError(f"{key} takes {expected}, got {value!r}") from None
    return out


def add_data_arguments(p) -> None:
    add_preprocess_argument(p)
    p.add_argument("--download", action="store_true", help="download a torchvision dataset "
                   "that is not under the root")
    add_augment_argument(p)


def add_preprocess_argument(p, whose: str = "the") -> None:
    p.add_argument("--preprocess", type=_pairs, default={}, metavar="K=V,...",
                   help=f"override {whose} weights' preprocessing: image_size, crop_size, "
                   "resize_size, interpolation, mean/std as a/b/c (a size here wins over "
                   "--image-size)")


def add_image_size_argument(p, whose: str = "the model's") -> None:
    from ptcore.data.sources import IN_MEMORY_IMAGE_SIZE

    p.add_argument("--image-size", type=int, metavar="N",
                   help="input size: digits and glyphs are rendered at N (default "
                   f"{IN_MEMORY_IMAGE_SIZE}); image files are read at N instead of {whose} "
                   "weights' crop size (default: their own preprocessing, docs/data.md)")


def add_augment_argument(p) -> None:
    from ptcore.data.augment import AUGMENTS

    p.add_argument("--augment", choices=AUGMENTS, default="none",
                   help="training-split augmentation at the model's preprocessing: basic "
                   "(random resized crop + flip), trivial or randaugment (basic + that policy); "
                   "none: the evaluation transform (docs/data.md)")
